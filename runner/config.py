"""The runner's configuration: parsed once into a typed, validated value.

Every option comes from the command line or from an environment variable
(``SIGRUN_*``), so a pod spec can configure a runner without a command line;
the operator sets exactly these variables.  Nothing here touches Redis.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass, field

from sigrun.runner.errors import ConfigError
from sigrun.runner.jobs import RunnerIdentity
from sigrun.runner.policy import Backoff
from sigrun.runner.protocol import Retention


@dataclass(frozen=True)
class WorkerConfig:
    redis_url: str
    queues: tuple[str, ...]
    concurrency: int = 1
    allowed_modules: tuple[str, ...] = ()
    burst: bool = False
    grace_seconds: float = 30.0
    default_timeout: float | None = None
    backoff: Backoff = field(default_factory=Backoff)
    retention: Retention = field(default_factory=Retention)
    heartbeat_interval: float = 5.0
    heartbeat_ttl: int = 30
    reap_interval: float = 30.0
    prefix: str = "sigrun:"
    termination_log: str | None = None
    child_cgroup: str | None = None  # path of a memory cgroup children join (demo, tests)
    # Fork children from a lean fork server process (runner/forkserver.py) rather
    # than from the runner itself: cheaper forks, and on a second core.
    fork_server: bool = True
    # The fork server imports each allowed job module on its first job, so later
    # children need not (runs the module's top-level code in the fork server).
    preload: bool = True

    def __post_init__(self) -> None:
        if not self.queues:
            raise ConfigError("no queue to work on: give --queue (or SIGRUN_QUEUES)")
        if any(not q or "{" in q or "}" in q for q in self.queues):
            raise ConfigError(f"queue names must be non-empty and contain no braces: {self.queues}")
        if self.concurrency < 1:
            raise ConfigError(f"--concurrency must be at least 1, got {self.concurrency}")
        if self.grace_seconds < 0:
            raise ConfigError(f"--grace must not be negative, got {self.grace_seconds}")
        if self.default_timeout is not None and self.default_timeout <= 0:
            raise ConfigError(f"--timeout must be positive, got {self.default_timeout}")
        if self.heartbeat_ttl <= self.heartbeat_interval:
            raise ConfigError("the heartbeat TTL must be longer than the heartbeat interval")
        if not self.allowed_modules:
            raise ConfigError(
                "no module is allowed to run: give --allow-module PREFIX (or "
                "SIGRUN_ALLOW_MODULES); sigrun refuses every job function outside that list"
            )


def identity_from_env(environ: dict[str, str] | None = None) -> RunnerIdentity:
    """Who this runner is: the pod (through the downward API) or the host, plus pid.

    The random suffix makes a restarted container (same pod, same pid 1) a new
    runner, so the jobs of the dead one can still be told apart.
    """
    env = os.environ if environ is None else environ
    hostname = socket.gethostname()
    pod_name = env.get("SIGRUN_POD_NAME") or None
    pid = os.getpid()
    return RunnerIdentity(
        runner_id=f"{pod_name or hostname}:{pid}:{secrets.token_hex(3)}",
        hostname=hostname,
        pid=pid,
        pod_name=pod_name,
        pod_uid=env.get("SIGRUN_POD_UID") or None,
        pod_namespace=env.get("SIGRUN_POD_NAMESPACE") or None,
        started_at=time.time(),
    )

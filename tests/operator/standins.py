"""Test stand-ins for what cannot run here: the kubelet, and the containers it would run.

There is no kubelet and no container runtime in the test control plane (tests/cluster): pods
are created by the ReplicaSet controller and bound by the scheduler, and stay Pending.  So:

* :class:`RunnerStandIn` plays a runner pod's container: a real ``sigrun work`` process
  started locally with that pod's identity in its environment (``SIGRUN_POD_NAME/UID/
  NAMESPACE``, as the downward API would give it) and a termination-log file of its own;
* :class:`KubeletStandIn` reports what a kubelet would, by patching ``pods/status`` through
  the API: container running, container restarted after a whole-container OOM kill (with
  the termination log copied into ``lastState.terminated.message``), pod evicted, container
  killed when a deletion's grace period ran out.

A whole-container OOM kill is played by SIGKILLing the runner and every child it forked,
which is what the kernel does under ``memory.oom.group``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.cluster.controlplane import Cluster, wait_for
from tests.conftest import sigrun_command
from tests.operator.support import JOBS


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RunnerStandIn:
    """The runner container of one pod, as a local ``sigrun work`` process."""

    def __init__(
        self,
        pod: dict[str, Any],
        *,
        redis_url: str,
        queues: list[str],
        workdir: Path,
        concurrency: int = 1,
        heartbeat_ttl: int = 30,
    ) -> None:
        meta = pod["metadata"]
        self.pod_name: str = meta["name"]
        self.pod_uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.workdir = workdir / f"{self.pod_name}-{secrets.token_hex(2)}"
        self.workdir.mkdir(parents=True)
        self.termination_log = self.workdir / "termination-log"
        args = [
            "work",
            "--redis",
            redis_url,
            "--allow-module",
            JOBS,
            "--concurrency",
            str(concurrency),
            "--heartbeat-ttl",
            str(heartbeat_ttl),
            "--termination-log",
            str(self.termination_log),
            "--grace",
            "5",
        ]
        for queue in queues:
            args += ["--queue", queue]
        env = dict(os.environ)
        env.update(
            SIGRUN_POD_NAME=self.pod_name,
            SIGRUN_POD_UID=self.pod_uid,
            SIGRUN_POD_NAMESPACE=self.namespace,
        )
        with (self.workdir / "runner.log").open("wb") as out:
            self.process = subprocess.Popen(
                sigrun_command(*args), stdout=out, stderr=subprocess.STDOUT, env=env
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return (self.workdir / "runner.log").read_text(errors="replace")

    def termination_message(self) -> str:
        """What the kubelet would copy into ``terminated.message`` (it reads up to 4 KiB)."""
        try:
            return self.termination_log.read_text()[-4096:]
        except FileNotFoundError:
            return ""

    def oom_kill(self, child_pids: list[int]) -> None:
        """The kernel's group OOM kill: every process of the container, at once, SIGKILL."""
        for pid in [self.pid, *child_pids]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, as the kubelet sends on deletion; the runner drains and exits."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


class KubeletStandIn:
    """Writes pod status the way the kubelet on the pod's node would."""

    def __init__(self, cluster: Cluster) -> None:
        self.rest = cluster.rest()

    def _patch(self, pod: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
        body: dict[str, Any] = self.rest.request(
            "PATCH", path, {"status": status}, content_type="application/merge-patch+json"
        )
        return body

    def _container(self, pod: dict[str, Any], **fields: Any) -> dict[str, Any]:
        [spec] = pod["spec"]["containers"]
        return {
            "name": spec["name"],
            "image": spec["image"],
            "imageID": "",
            "ready": False,
            "started": False,
            "restartCount": 0,
            **fields,
        }

    def running(
        self, pod: dict[str, Any], *, restarts: int = 0, last: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        now = _now()
        container = self._container(
            pod,
            ready=True,
            started=True,
            restartCount=restarts,
            containerID=f"containerd://{secrets.token_hex(16)}",
            state={"running": {"startedAt": now}},
            lastState={"terminated": last} if last else {},
        )
        return self._patch(
            pod,
            {
                "phase": "Running",
                "startTime": now,
                "conditions": [
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                ],
                "containerStatuses": [container],
            },
        )

    @staticmethod
    def terminated(reason: str, exit_code: int, message: str) -> dict[str, Any]:
        return {
            "reason": reason,
            "exitCode": exit_code,
            "message": message,
            "startedAt": _now(),
            "finishedAt": _now(),
            "containerID": f"containerd://{secrets.token_hex(16)}",
        }

    def oom_restart(self, pod: dict[str, Any], message: str) -> dict[str, Any]:
        """restartCount +1; lastState.terminated OOMKilled 137 with the termination log."""
        return self.running(pod, restarts=1, last=self.terminated("OOMKilled", 137, message))

    def evicted(self, pod: dict[str, Any], message: str) -> dict[str, Any]:
        """Node-pressure eviction: phase Failed, reason Evicted, DisruptionTarget, exit 137."""
        now = _now()
        return self._patch(
            pod,
            {
                "phase": "Failed",
                "reason": "Evicted",
                "message": "The node was low on resource: memory. Threshold quantity: 100Mi.",
                "conditions": [
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "TerminationByKubelet",
                        "message": "The node was low on resource: memory.",
                        "lastTransitionTime": now,
                    },
                    {"type": "Ready", "status": "False", "lastTransitionTime": now},
                ],
                "containerStatuses": [
                    self._container(
                        pod, state={"terminated": self.terminated("Error", 137, message)}
                    )
                ],
            },
        )

    def killed_after_grace(self, pod: dict[str, Any], message: str) -> dict[str, Any]:
        """A deleted pod whose runner outlived the grace period: SIGKILL, exit 137."""
        return self._patch(
            pod,
            {
                "containerStatuses": [
                    self._container(
                        pod, state={"terminated": self.terminated("Error", 137, message)}
                    )
                ]
            },
        )


def wait_until_holding(
    redis: Any, runner_jobs: int, key_pattern: str = "sigrun:runner:*", timeout: float = 30
) -> None:
    """Until runners' heartbeats list ``runner_jobs`` jobs with their memory figures."""

    def check() -> bool:
        held = 0
        for key in redis.scan_iter(match=key_pattern):
            rss = redis.hget(key, "rss") or "{}"
            held += len(eval_json(rss))
        return held >= runner_jobs

    wait_for(check, what=f"heartbeats listing {runner_jobs} running jobs", timeout=timeout)


def eval_json(text: str) -> dict[str, Any]:
    body = json.loads(text)
    return body if isinstance(body, dict) else {}


def wait_for_file(path: Path, timeout: float = 30) -> str:
    def check() -> str | None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        return text or None

    return wait_for(check, what=f"{path} to be written", timeout=timeout)

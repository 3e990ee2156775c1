"""The whole runner against the kernel: OOM kills and timeouts seen through ``sigrun work``."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

import pytest

from sigrun.runner import client
from sigrun.runner.cgroup import MemoryCgroup
from sigrun.runner.jobs import Cause, Outcome
from sigrun.runner.redisio import SyncRedis
from tests.conftest import run_sigrun, sigrun_command

pytestmark = pytest.mark.kernel

Q = "kernel"
MiB = 1024 * 1024


def test_a_job_oom_killed_on_every_attempt_gives_up_with_the_cause(
    redis: SyncRedis, redis_url: str, make_cgroup: Callable[[int], MemoryCgroup]
) -> None:
    cgroup = make_cgroup(64 * MiB)
    job_id = client.enqueue(redis, Q, "tests.kernel.jobs:allocate", 256, max_attempts=3)
    run_sigrun(
        "work",
        "--redis",
        redis_url,
        "-q",
        Q,
        "--burst",
        "--backoff",
        "0",
        "--allow-module",
        "tests.kernel.jobs",
        "--child-cgroup",
        str(cgroup.path),
    )
    history = client.history(redis, Q)
    assert [(r.attempt, r.outcome, r.cause) for r in history] == [
        (3, Outcome.DIRTY, Cause.OOM_KILLED),
        (2, Outcome.DIRTY, Cause.OOM_KILLED),
        (1, Outcome.DIRTY, Cause.OOM_KILLED),
    ]
    last = history[0]
    assert last.job_id == job_id and last.signal_name == "SIGKILL"
    assert "OOMKilled — memory limit 64Mi" in last.message
    assert last.message.endswith("gave up after 3 dirty exits (OOMKilled)")
    assert last.peak_rss_bytes and last.peak_rss_bytes > 32 * MiB
    [final] = client.failed(redis, queue=Q, cause=Cause.OOM_KILLED)
    assert final.job_id == job_id and final.gave_up


def test_a_job_past_its_own_timeout_is_killed_as_a_timeout(
    redis: SyncRedis, redis_url: str
) -> None:
    client.enqueue(redis, Q, "tests.kernel.jobs:sleep", 30, timeout=0.5, max_attempts=1)
    run_sigrun(
        "work", "--redis", redis_url, "-q", Q, "--burst", "--allow-module", "tests.kernel.jobs"
    )
    [record] = client.failed(redis, queue=Q)
    assert (record.outcome, record.cause, record.signal_name) == (
        Outcome.DIRTY,
        Cause.TIMEOUT,
        "SIGKILL",
    )
    assert record.runtime_seconds is not None and 0.5 <= record.runtime_seconds < 5


def test_a_runner_inside_a_memory_limit_survives_its_childs_oom_kill_and_goes_on(
    redis: SyncRedis, redis_url: str, make_cgroup: Callable[[int], MemoryCgroup]
) -> None:
    """Like a container: runner and children share one limit; only the greedy child dies."""
    cgroup = make_cgroup(160 * MiB)
    greedy = client.enqueue(redis, Q, "tests.kernel.jobs:allocate", 512, max_attempts=3)
    modest = [client.enqueue(redis, Q, "tests.kernel.jobs:allocate", 16) for _ in range(5)]
    command = sigrun_command(
        "work",
        "--redis",
        redis_url,
        "-q",
        Q,
        "--burst",
        "--backoff",
        "0",
        "--allow-module",
        "tests.kernel.jobs",
    )
    runner = subprocess.run(
        command,
        preexec_fn=lambda: cgroup.add(os.getpid()),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert runner.returncode == 0, runner.stderr
    history = client.history(redis, Q)
    assert [(r.job_id, r.cause) for r in history] == [(greedy, Cause.OOM_KILLED)] * 3
    assert "memory limit 160Mi" in history[0].message
    assert history[0].message.endswith("gave up after 3 dirty exits (OOMKilled)")
    # Peak RSS near the limit: the child grew until the kernel stopped it.
    assert all(100 * MiB < (r.peak_rss_bytes or 0) <= 170 * MiB for r in history), [
        r.peak_rss_bytes for r in history
    ]
    for job_id in modest:
        assert client.job_state(redis, Q, job_id)["state"] == "succeeded"

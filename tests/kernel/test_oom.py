"""A real kernel OOM kill inside a memory cgroup made for the test (needs root)."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from sigrun.runner.cgroup import MemoryCgroup
from sigrun.runner.jobs import Cause, Outcome
from sigrun.runner.supervise import SupervisorConfig
from tests.kernel.support import ALLOWED, run_job

pytestmark = pytest.mark.kernel

MiB = 1 << 20


def test_sigkill_after_oom_counter_rise_is_oomkilled(
    make_cgroup: Callable[[int], MemoryCgroup],
) -> None:
    cgroup = make_cgroup(64 * MiB)
    config = SupervisorConfig(allowed_modules=ALLOWED, child_cgroup=cgroup)
    ending, verdict = run_job("allocate", 256, config=config)

    assert verdict.outcome is Outcome.DIRTY
    assert verdict.cause is Cause.OOM_KILLED
    assert verdict.signal == signal.SIGKILL
    assert verdict.signal_name == "SIGKILL"
    assert verdict.exit_code is None
    assert ending.report is None
    assert ending.oom_kills == 1
    assert ending.memory_limit_bytes == 64 * MiB
    # ru_maxrss counts every resident page, the ones shared with the parent since
    # fork too; what the job allocated itself is bounded by the limit.
    assert ending.peak_rss_bytes is not None and ending.peak_rss_bytes >= 48 * MiB
    assert verdict.message.startswith(
        f"pid {ending.pid} SIGKILL (signal 9): OOMKilled — memory limit 64Mi, peak "
    )
    assert verdict.message.endswith(f"after {ending.runtime_seconds:.1f}s")
    # It said how far it got before the kernel killed it; no more than the limit.
    assert ending.last_words, "the job's progress lines were lost"
    assert ending.last_words[-1].startswith("allocated ")
    assert int(ending.last_words[-1].split()[1]) < 64
    assert cgroup.oom_kills() == 1


def test_job_within_the_limit_succeeds_and_the_counter_stays(
    make_cgroup: Callable[[int], MemoryCgroup],
) -> None:
    cgroup = make_cgroup(128 * MiB)
    config = SupervisorConfig(allowed_modules=ALLOWED, child_cgroup=cgroup)
    ending, verdict = run_job("allocate", 32, config=config)
    assert verdict.outcome is Outcome.SUCCEEDED
    assert ending.report is not None and ending.report.result == 32
    assert ending.oom_kills == 0


def test_every_child_joins_the_configured_cgroup(
    make_cgroup: Callable[[int], MemoryCgroup],
) -> None:
    cgroup = make_cgroup(128 * MiB)
    config = SupervisorConfig(allowed_modules=ALLOWED, child_cgroup=cgroup)
    ending, verdict = run_job("tests.kernel.jobs:my_memory_cgroup", config=config)
    assert verdict.outcome is Outcome.SUCCEEDED, verdict.message
    assert ending.report is not None and ending.report.result == str(cgroup.path)

"""DESIGN.md's classification table, one row per line, plus the wording users read.

Wait statuses are built the way the kernel encodes them (and ``os.wait4`` returns
them): a signal number in the low 7 bits (0x80 = core dumped) for a kill, the exit
code shifted left by 8 for an exit.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, replace

import pytest

from sigrun.runner.exits import Ending, KillReason, classify, format_bytes, signal_name
from sigrun.runner.jobs import Cause, ChildReport, Outcome

MiB = 1 << 20
SIGKILL = int(signal.SIGKILL)


def killed(sig: int, *, core: bool = False) -> int:
    return sig | (0x80 if core else 0)


def exited(code: int) -> int:
    return code << 8


def test_wait_status_helpers_match_the_kernel_encoding() -> None:
    assert os.WIFSIGNALED(killed(SIGKILL)) and os.WTERMSIG(killed(SIGKILL)) == SIGKILL
    assert os.WCOREDUMP(killed(signal.SIGSEGV, core=True))
    assert os.WIFEXITED(exited(3)) and os.WEXITSTATUS(exited(3)) == 3
    assert os.waitstatus_to_exitcode(killed(SIGKILL)) == -SIGKILL
    assert os.waitstatus_to_exitcode(exited(3)) == 3


BASE = Ending(pid=18535, wait_status=exited(0), peak_rss_bytes=12 * MiB, runtime_seconds=1.5)
OK = ChildReport(ok=True, result=5)


@dataclass(frozen=True)
class Row:
    name: str
    ending: Ending
    outcome: Outcome
    cause: Cause | None
    message: str  # exact, or a substring when `exact` is False
    exit_code: int | None = None
    signal: int | None = None
    exact: bool = True


def raised(cause: Cause | None, exc_type: str, message: str) -> ChildReport:
    return ChildReport(ok=False, cause=cause, exc_type=exc_type, exc_message=message)


ROWS = [
    # -- returned ---------------------------------------------------------------------
    Row("returned", replace(BASE, report=OK), Outcome.SUCCEEDED, None, "", exit_code=0),
    # -- raised -----------------------------------------------------------------------
    Row(
        "raised",
        replace(BASE, wait_status=exited(1), report=raised(Cause.EXCEPTION, "ValueError", "bad")),
        Outcome.FAILED,
        Cause.EXCEPTION,
        "ValueError: bad",
        exit_code=1,
    ),
    Row(
        "raised without a cause in the report",
        replace(BASE, wait_status=exited(1), report=raised(None, "KeyError", "'k'")),
        Outcome.FAILED,
        Cause.EXCEPTION,
        "KeyError: 'k'",
        exit_code=1,
    ),
    Row(
        "raised with an empty message",
        replace(BASE, wait_status=exited(1), report=raised(Cause.EXCEPTION, "StopIteration", "")),
        Outcome.FAILED,
        Cause.EXCEPTION,
        "StopIteration",
        exit_code=1,
    ),
    *(
        Row(
            f"could not start: {cause.value}",
            replace(BASE, wait_status=exited(1), report=raised(cause, cause.value, "why")),
            Outcome.FAILED,
            cause,
            f"{cause.value}: why",
            exit_code=1,
        )
        for cause in (Cause.FUNCTION_NOT_FOUND, Cause.FUNCTION_NOT_ALLOWED, Cause.BAD_ARGUMENTS)
    ),
    # -- exited non-zero without a report ---------------------------------------------
    Row(
        "exited non-zero without a report",
        replace(BASE, wait_status=exited(3)),
        Outcome.FAILED,
        Cause.EXIT_CODE,
        "pid 18535 exited with code 3 without reporting a result: the job (or a library it"
        " called) ended the process with sys.exit or os._exit; peak 12Mi, after 1.5s",
        exit_code=3,
    ),
    Row(
        "exited 0 without a report is a failure",
        replace(BASE, wait_status=exited(0)),
        Outcome.FAILED,
        Cause.EXIT_CODE,
        "pid 18535 exited with code 0 without reporting a result: the job (or a library it"
        " called) ended the process with sys.exit(0) or os._exit(0) before returning, so"
        " nothing proves it finished; peak 12Mi, after 1.5s",
        exit_code=0,
    ),
    Row(
        "exit after an OOM kill of something else in the cgroup says so",
        replace(BASE, wait_status=exited(1), oom_kills=1),
        Outcome.FAILED,
        Cause.EXIT_CODE,
        "the cgroup's oom_kill counter rose by 1 meanwhile, peak 12Mi",
        exit_code=1,
        exact=False,
    ),
    # -- SIGKILL and the oom_kill counter rose ----------------------------------------
    Row(
        "sigkill after oom counter rise is oomkilled",
        Ending(
            pid=18535,
            wait_status=killed(SIGKILL),
            peak_rss_bytes=251 * MiB,
            runtime_seconds=41.2,
            oom_kills=1,
            memory_limit_bytes=256 * MiB,
        ),
        Outcome.DIRTY,
        Cause.OOM_KILLED,
        "pid 18535 SIGKILL (signal 9): OOMKilled — memory limit 256Mi, peak 251Mi, after 41.2s",
        signal=SIGKILL,
    ),
    Row(
        "oomkilled without a cgroup limit blames the node",
        replace(BASE, wait_status=killed(SIGKILL), oom_kills=2),
        Outcome.DIRTY,
        Cause.OOM_KILLED,
        "pid 18535 SIGKILL (signal 9): OOMKilled — no memory limit found on the cgroup"
        " (the node itself may have run out of memory), peak 12Mi, after 1.5s",
        signal=SIGKILL,
    ),
    # -- the runner's own timeout -----------------------------------------------------
    Row(
        "runner timeout sigkill is timeout",
        Ending(
            pid=7,
            wait_status=killed(SIGKILL),
            peak_rss_bytes=12 * MiB,
            runtime_seconds=30.01,
            killed_by=KillReason.TIMEOUT,
            timeout_seconds=30.0,
        ),
        Outcome.DIRTY,
        Cause.TIMEOUT,
        "pid 7 SIGKILL (signal 9): Timeout — exceeded its 30s timeout, peak 12Mi, after 30.0s",
        signal=SIGKILL,
    ),
    Row(
        "timeout wins over an oom counter rise but mentions it",
        replace(
            BASE,
            wait_status=killed(SIGKILL),
            killed_by=KillReason.TIMEOUT,
            timeout_seconds=2.5,
            oom_kills=1,
        ),
        Outcome.DIRTY,
        Cause.TIMEOUT,
        "pid 18535 SIGKILL (signal 9): Timeout — exceeded its 2.5s timeout (the cgroup's"
        " oom_kill counter also rose by 1), peak 12Mi, after 1.5s",
        signal=SIGKILL,
    ),
    Row(
        "a crash before the timeout kill landed is a crash",
        replace(BASE, wait_status=killed(signal.SIGSEGV), killed_by=KillReason.TIMEOUT),
        Outcome.DIRTY,
        Cause.CRASH,
        "pid 18535 SIGSEGV (signal 11): Crash",
        signal=signal.SIGSEGV,
        exact=False,
    ),
    # -- shutdown after the grace period ----------------------------------------------
    Row(
        "shutdown kill is shutdown",
        replace(BASE, wait_status=killed(SIGKILL), killed_by=KillReason.SHUTDOWN, grace_seconds=30),
        Outcome.DIRTY,
        Cause.SHUTDOWN,
        "pid 18535 SIGKILL (signal 9): Shutdown — killed by the runner, which was shutting"
        " down and its 30s grace period ran out, peak 12Mi, after 1.5s",
        signal=SIGKILL,
    ),
    Row(
        "shutdown wins whatever the signal and the oom counter",
        replace(
            BASE, wait_status=killed(signal.SIGTERM), killed_by=KillReason.SHUTDOWN, oom_kills=1
        ),
        Outcome.DIRTY,
        Cause.SHUTDOWN,
        "pid 18535 SIGTERM (signal 15): Shutdown — killed by the runner, which was shutting"
        " down and its grace period ran out, peak 12Mi, after 1.5s",
        signal=signal.SIGTERM,
    ),
    Row(
        "a report written before the shutdown kill still counts",
        replace(BASE, wait_status=killed(SIGKILL), killed_by=KillReason.SHUTDOWN, report=OK),
        Outcome.SUCCEEDED,
        None,
        "",
        signal=SIGKILL,
    ),
    # -- crashes ----------------------------------------------------------------------
    Row(
        "sigsegv is crash",
        replace(BASE, wait_status=killed(signal.SIGSEGV)),
        Outcome.DIRTY,
        Cause.CRASH,
        "pid 18535 SIGSEGV (signal 11): Crash — invalid memory access (segmentation fault),"
        " peak 12Mi, after 1.5s",
        signal=signal.SIGSEGV,
    ),
    Row(
        "sigabrt is crash",
        replace(BASE, wait_status=killed(signal.SIGABRT, core=True)),
        Outcome.DIRTY,
        Cause.CRASH,
        "pid 18535 SIGABRT (signal 6) (core dumped): Crash — aborted (abort(), a failed"
        " assertion or a fatal runtime error), peak 12Mi, after 1.5s",
        signal=signal.SIGABRT,
    ),
    Row(
        "sigbus is crash",
        replace(BASE, wait_status=killed(signal.SIGBUS)),
        Outcome.DIRTY,
        Cause.CRASH,
        "pid 18535 SIGBUS (signal 7): Crash — bus error",
        signal=signal.SIGBUS,
        exact=False,
    ),
    Row(
        "sigill is crash",
        replace(BASE, wait_status=killed(signal.SIGILL)),
        Outcome.DIRTY,
        Cause.CRASH,
        "pid 18535 SIGILL (signal 4): Crash — illegal instruction, peak 12Mi, after 1.5s",
        signal=signal.SIGILL,
    ),
    # -- any other signal -------------------------------------------------------------
    Row(
        "sigkill without oom counter rise is signal",
        replace(BASE, wait_status=killed(SIGKILL), oom_kills=0),
        Outcome.DIRTY,
        Cause.SIGNAL,
        "pid 18535 SIGKILL (signal 9): Signal — killed by SIGKILL, not by the OOM killer as"
        " far as the cgroup's oom_kill counter tells (it did not rise), peak 12Mi, after 1.5s",
        signal=SIGKILL,
    ),
    Row(
        "sigkill with the oom counter unavailable says it cannot tell",
        replace(BASE, wait_status=killed(SIGKILL), oom_kills=None, peak_rss_bytes=None),
        Outcome.DIRTY,
        Cause.SIGNAL,
        "pid 18535 SIGKILL (signal 9): Signal — killed by SIGKILL; the cgroup's oom_kill"
        " counter is unavailable, so the OOM killer can be neither blamed nor ruled out,"
        " peak unknown, after 1.5s",
        signal=SIGKILL,
    ),
    Row(
        "sigterm is signal",
        replace(BASE, wait_status=killed(signal.SIGTERM)),
        Outcome.DIRTY,
        Cause.SIGNAL,
        "pid 18535 SIGTERM (signal 15): Signal — killed by SIGTERM, peak 12Mi, after 1.5s",
        signal=signal.SIGTERM,
    ),
    Row(
        "a timeout-marked child that died of sigterm is signal, not timeout",
        replace(BASE, wait_status=killed(signal.SIGTERM), killed_by=KillReason.TIMEOUT),
        Outcome.DIRTY,
        Cause.SIGNAL,
        "pid 18535 SIGTERM (signal 15): Signal — killed by SIGTERM",
        signal=signal.SIGTERM,
        exact=False,
    ),
    Row(
        "a real-time signal is named",
        replace(BASE, wait_status=killed(signal.SIGRTMIN + 2)),
        Outcome.DIRTY,
        Cause.SIGNAL,
        f"pid 18535 SIGRTMIN+2 (signal {signal.SIGRTMIN + 2}): Signal — killed by SIGRTMIN+2",
        signal=signal.SIGRTMIN + 2,
        exact=False,
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_classification_table(row: Row) -> None:
    verdict = classify(row.ending)
    assert verdict.outcome is row.outcome
    assert verdict.cause is row.cause
    if row.exact:
        assert verdict.message == row.message
    else:
        assert row.message in verdict.message
    assert verdict.exit_code == row.exit_code
    assert verdict.signal == row.signal
    expected_name = signal_name(row.signal) if row.signal is not None else None
    assert verdict.signal_name == expected_name


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0B"),
        (1023, "1023B"),
        (1024, "1Ki"),
        (1536, "1.5Ki"),
        (256 * MiB, "256Mi"),
        (251 * MiB + 300 * 1024, "251Mi"),
        (64 * MiB - 1, "64Mi"),
        (1536 * MiB, "1.5Gi"),
        (4 << 30, "4Gi"),
        (3 << 40, "3Ti"),
        (-2 * MiB, "-2Mi"),
    ],
)
def test_format_bytes_uses_kubernetes_binary_units(n: int, text: str) -> None:
    assert format_bytes(n) == text


@pytest.mark.parametrize(
    ("num", "name"),
    [
        (9, "SIGKILL"),
        (11, "SIGSEGV"),
        (15, "SIGTERM"),
        (int(signal.SIGRTMIN), "SIGRTMIN"),
        (int(signal.SIGRTMIN) + 3, "SIGRTMIN+3"),
        (int(signal.SIGRTMAX), "SIGRTMAX"),
        (200, "SIG200"),
    ],
)
def test_signal_name(num: int, name: str) -> None:
    assert signal_name(num) == name

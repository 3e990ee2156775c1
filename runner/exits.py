"""How a child ended, in words: (wait status, rusage, OOM counter rise, who killed it) -> Verdict.

This module owns the classification table of DESIGN.md ("How a job ends") and the
wording of every message a user sees about a dead job.  It is pure: no files, no
processes, no Redis, no clock.  The supervisor gathers the facts into an
:class:`Ending`; :func:`classify` turns them into a :class:`~sigrun.runner.jobs.Verdict`.

Decisions worth knowing (each is the least surprising reading we found):

* A report wins.  If the child wrote its report, the job's own word decides the
  outcome even if the process was killed afterwards (say, by a shutdown while it
  was flushing): the work was done, and re-running it would be worse.
* Exit code 0 without a report is a *failure* (cause ``ExitCode``, exit code 0).
  The child ended the process -- ``sys.exit(0)`` or ``os._exit(0)`` in the job or
  in a library it called -- before returning, so nothing proves the job finished.
* ``Timeout`` and ``Shutdown`` are claimed only for kills the runner itself made
  (``Ending.killed_by``), never guessed from the signal.  A timeout kill is
  ``Timeout`` only if the child really died of the runner's SIGKILL; if it
  crashed on its own first, the crash is what happened.
* ``OOMKilled`` needs SIGKILL *and* a rise of the cgroup's ``oom_kill`` counter
  while the child ran.  A SIGKILL without the rise is ``Signal``, and the message
  says whether the counter ruled the OOM killer out or was unavailable.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from enum import StrEnum

from sigrun.runner.jobs import Cause, ChildReport, Outcome, Verdict

__all__ = [
    "CRASH_SIGNALS",
    "Ending",
    "KillReason",
    "classify",
    "format_bytes",
    "format_seconds",
    "signal_name",
]


class KillReason(StrEnum):
    """Why the runner itself killed a child."""

    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"


@dataclass(frozen=True)
class Ending:
    """Every fact the supervisor knows about one finished child.

    ``oom_kills`` is the rise of the cgroup's ``oom_kill`` counter between the
    fork and the reaping (None: no cgroup, or the counter could not be read).
    ``memory_limit_bytes`` is None when there is no limit or it is unknown.
    ``last_words`` are the last lines the child wrote to stdout/stderr.
    """

    pid: int
    wait_status: int
    peak_rss_bytes: int | None
    runtime_seconds: float
    report: ChildReport | None = None
    oom_kills: int | None = None
    killed_by: KillReason | None = None
    memory_limit_bytes: int | None = None
    timeout_seconds: float | None = None
    grace_seconds: float | None = None
    last_words: tuple[str, ...] = ()


# Signals that mean the process itself did something fatal (a bug in native code,
# abort(), a bad mmap), as opposed to being told to die by someone else.
CRASH_SIGNALS: dict[int, str] = {
    signal.SIGSEGV: "invalid memory access (segmentation fault)",
    signal.SIGABRT: "aborted (abort(), a failed assertion or a fatal runtime error)",
    signal.SIGBUS: "bus error (bad memory access, e.g. a truncated memory-mapped file)",
    signal.SIGILL: "illegal instruction",
}

_UNITS = (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10))


def format_bytes(n: int) -> str:
    """Binary units as Kubernetes writes them: 268435456 -> "256Mi", 1610612736 -> "1.5Gi"."""
    if n < 0:
        return f"-{format_bytes(-n)}"
    for suffix, size in _UNITS:
        if n >= size:
            if n % size == 0:
                return f"{n // size}{suffix}"
            value = n / size
            if value < 10:
                return f"{value:.1f}{suffix}"
            return f"{round(value)}{suffix}"
    return f"{n}B"


def format_seconds(seconds: float) -> str:
    """A configured duration as people write it: 30.0 -> "30s", 2.5 -> "2.5s"."""
    return f"{seconds:g}s"


def signal_name(num: int) -> str:
    """9 -> "SIGKILL"; real-time signals as "SIGRTMIN+n"; unknown numbers as "SIG<n>"."""
    try:
        return signal.Signals(num).name
    except ValueError:
        pass
    if signal.SIGRTMIN <= num <= signal.SIGRTMAX:
        return f"SIGRTMIN+{num - signal.SIGRTMIN}"
    return f"SIG{num}"


def classify(ending: Ending) -> Verdict:
    """Apply DESIGN.md's table to one ending.  See the module docstring for the edge cases."""
    if ending.report is not None:
        return _from_report(ending, ending.report)
    status = ending.wait_status
    if os.WIFSIGNALED(status):
        return _from_signal(ending, os.WTERMSIG(status), core=os.WCOREDUMP(status))
    if os.WIFEXITED(status):
        return _from_exit_code(ending, os.WEXITSTATUS(status))
    # wait4 without WUNTRACED/WCONTINUED never returns anything else; be explicit anyway.
    return Verdict(
        outcome=Outcome.DIRTY,
        cause=Cause.SIGNAL,
        message=f"pid {ending.pid} ended with an unrecognised wait status {status:#x}",
    )


def _exit_code_of(status: int) -> int | None:
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else None


def _signal_of(status: int) -> int | None:
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else None


def _from_report(ending: Ending, report: ChildReport) -> Verdict:
    sig = _signal_of(ending.wait_status)
    name = signal_name(sig) if sig is not None else None
    code = _exit_code_of(ending.wait_status)
    if report.ok:
        return Verdict(outcome=Outcome.SUCCEEDED, signal=sig, signal_name=name, exit_code=code)
    message = f"{report.exc_type}: {report.exc_message}" if report.exc_message else report.exc_type
    return Verdict(
        outcome=Outcome.FAILED,
        cause=report.cause or Cause.EXCEPTION,
        message=message,
        signal=sig,
        signal_name=name,
        exit_code=code,
    )


def _from_exit_code(ending: Ending, code: int) -> Verdict:
    head = f"pid {ending.pid} exited with code {code} without reporting a result"
    if code == 0:
        why = (
            "the job (or a library it called) ended the process with sys.exit(0) or"
            " os._exit(0) before returning, so nothing proves it finished"
        )
    else:
        why = "the job (or a library it called) ended the process with sys.exit or os._exit"
    tail = _tail(ending)
    if ending.oom_kills:
        # The job itself was not OOM-killed, but something in its cgroup was:
        # typically a subprocess the job started, whose death made it exit.
        tail = f"the cgroup's oom_kill counter rose by {ending.oom_kills} meanwhile, {tail}"
    return Verdict(
        outcome=Outcome.FAILED,
        cause=Cause.EXIT_CODE,
        message=f"{head}: {why}; {tail}",
        exit_code=code,
    )


def _from_signal(ending: Ending, sig: int, *, core: bool) -> Verdict:
    name = signal_name(sig)
    head = f"pid {ending.pid} {name} (signal {sig})"
    if core:
        head += " (core dumped)"
    cause, detail = _signal_cause(ending, sig, name)
    return Verdict(
        outcome=Outcome.DIRTY,
        cause=cause,
        message=f"{head}: {cause.value} — {detail}",
        signal=sig,
        signal_name=name,
    )


def _signal_cause(ending: Ending, sig: int, name: str) -> tuple[Cause, str]:
    tail = _tail(ending)
    if ending.killed_by is KillReason.SHUTDOWN:
        grace = (
            f"its {format_seconds(ending.grace_seconds)} grace period"
            if ending.grace_seconds is not None
            else "its grace period"
        )
        why = f"killed by the runner, which was shutting down and {grace} ran out"
        return Cause.SHUTDOWN, f"{why}, {tail}"
    if ending.killed_by is KillReason.TIMEOUT and sig == signal.SIGKILL:
        limit = (
            f"its {format_seconds(ending.timeout_seconds)} timeout"
            if ending.timeout_seconds is not None
            else "its timeout"
        )
        also = ""
        if ending.oom_kills:
            also = f" (the cgroup's oom_kill counter also rose by {ending.oom_kills})"
        return Cause.TIMEOUT, f"exceeded {limit}{also}, {tail}"
    if sig == signal.SIGKILL and ending.oom_kills:
        return Cause.OOM_KILLED, f"{_limit_text(ending.memory_limit_bytes)}, {tail}"
    if sig in CRASH_SIGNALS:
        return Cause.CRASH, f"{CRASH_SIGNALS[sig]}, {tail}"
    if sig == signal.SIGKILL:
        if ending.oom_kills is None:
            why = (
                "killed by SIGKILL; the cgroup's oom_kill counter is unavailable,"
                " so the OOM killer can be neither blamed nor ruled out"
            )
        else:
            why = (
                "killed by SIGKILL, not by the OOM killer as far as the cgroup's"
                " oom_kill counter tells (it did not rise)"
            )
        return Cause.SIGNAL, f"{why}, {tail}"
    return Cause.SIGNAL, f"killed by {name}, {tail}"


def _limit_text(limit: int | None) -> str:
    if limit is None:
        return "no memory limit found on the cgroup (the node itself may have run out of memory)"
    return f"memory limit {format_bytes(limit)}"


def _tail(ending: Ending) -> str:
    peak = "unknown" if ending.peak_rss_bytes is None else format_bytes(ending.peak_rss_bytes)
    return f"peak {peak}, after {ending.runtime_seconds:.1f}s"

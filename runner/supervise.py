"""Fork one child per job, watch it, and gather the facts of its ending.

This module owns the process side of a job: ``fork``, the child's own process
group, its output pipe and report pipe, ``wait4``, timeouts and the runner's
own kills.  It returns an :class:`~sigrun.runner.exits.Ending` and leaves the
judging to :func:`sigrun.runner.exits.classify`.  It never imports Redis and
never decides what happens to a job next (retry, record, requeue).

How one job runs (all on the caller's asyncio loop; no threads, no SIGCHLD
handler, no polling):

* the parent makes two pipes (output, report), freezes the GC heap so the child
  does not copy-on-write it, and forks;
* the child (:func:`sigrun.runner.execute.start_child`) takes a process group of
  its own, points stdout/stderr at the output pipe, joins ``child_cgroup``, raises
  its ``oom_score_adj``, runs the job and always ends in ``os._exit``;
* the parent watches a pidfd for the exit, reads the output (logging each line
  on ``sigrun.job`` and keeping the last ones as "last words") and the report;
* when the pidfd fires, the child is a zombie: its pid cannot be reused yet, so
  SIGKILL to its process group reaches only its leftovers (a job must not leak
  processes); then ``wait4`` gives the status and the peak RSS, the pipes are
  drained without waiting for EOF (a grandchild may still hold them), and the
  OOM-kill counter is read again.

A grandchild that moved to a process group of its own (``setsid``) escapes the
group kill; only a cgroup per job could catch those.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from sigrun.runner import execute
from sigrun.runner.cgroup import MemoryCgroup
from sigrun.runner.errors import ConfigError
from sigrun.runner.exits import Ending, KillReason
from sigrun.runner.jobs import ChildReport, Job

__all__ = ["Supervisor", "SupervisorConfig"]

log = logging.getLogger(__name__)
job_log = logging.getLogger("sigrun.job")

_READ_SIZE = 65536
_MAX_LINE = 64 * 1024  # a "line" without a newline is cut here, so one cannot eat memory
_DRAIN_LIMIT = 2 << 20  # at exit, read at most this much more from each pipe


@dataclass(frozen=True)
class SupervisorConfig:
    """How children are started and watched; parsed once, validated here."""

    allowed_modules: tuple[str, ...]
    default_timeout: float | None = None
    last_words_lines: int = 20
    # Each child joins this cgroup right after fork, and the OOM counter is read
    # from it; None: children stay in the runner's cgroup, whose counter is read.
    child_cgroup: MemoryCgroup | None = None
    # Make the kernel OOM killer pick a child before the runner (raising it needs
    # no privilege).  None leaves it alone.
    child_oom_score_adj: int | None = 1000
    forward_output: bool = True
    # On SIGSEGV/SIGABRT/SIGBUS/SIGILL/SIGFPE the child writes its Python stack to
    # its output first, so a Crash comes with last words saying where.
    child_faulthandler: bool = True

    def __post_init__(self) -> None:
        if self.default_timeout is not None and not self.default_timeout > 0:
            raise ConfigError(f"default_timeout must be positive, got {self.default_timeout!r}")
        if self.last_words_lines < 0:
            raise ConfigError(f"last_words_lines must be >= 0, got {self.last_words_lines!r}")
        adj = self.child_oom_score_adj
        if adj is not None and not -1000 <= adj <= 1000:
            raise ConfigError(f"child_oom_score_adj must be in -1000..1000, got {adj!r}")


@dataclass(eq=False, slots=True, kw_only=True)
class _Child:
    """The parent's bookkeeping for one running child."""

    job: Job
    pid: int
    pidfd: int
    out_fd: int
    report_fd: int
    timeout: float | None
    oom_before: int | None
    future: asyncio.Future[Ending]
    lines: collections.deque[str]  # the last words
    started: float = field(default_factory=time.monotonic)
    killed_by: KillReason | None = None
    grace: float | None = None
    partial: bytes = b""  # an unfinished output line
    report_chunks: list[bytes] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    done: bool = False  # reaped (or abandoned), fds closed


class Supervisor:
    """Runs jobs in forked children, any number at once, on the caller's event loop."""

    def __init__(self, config: SupervisorConfig) -> None:
        self._config = config
        self._children: dict[int, _Child] = {}  # by pid: a job id could come twice
        # v1 counts an OOM kill only in the victim's own cgroup, so read the one the
        # children are in.  Looked up once: a process does not change cgroup.
        self._oom_cgroup = config.child_cgroup or MemoryCgroup.of_process("self")
        self._setup = execute.ChildSetup.of(
            allowed_modules=config.allowed_modules,
            cgroup=config.child_cgroup,
            oom_score_adj=config.child_oom_score_adj,
            faulthandler=config.child_faulthandler,
        )

    @property
    def running(self) -> Mapping[str, int]:
        """Job id -> pid of every child not yet reaped."""
        return {child.job.id: pid for pid, child in self._children.items()}

    async def run(self, job: Job) -> Ending:
        """Run ``job`` in a new child and return how it ended.

        If the awaiting task is cancelled, the child's whole process group is
        killed and reaped before the cancellation goes on: no orphan is left.
        """
        loop = asyncio.get_running_loop()
        timeout = job.timeout if job.timeout is not None else self._config.default_timeout
        cgroup = self._oom_cgroup
        oom_before = cgroup.oom_kills() if cgroup is not None else None
        pid, pidfd, out_fd, report_fd = self._fork(job)
        child = _Child(
            job=job,
            pid=pid,
            pidfd=pidfd,
            out_fd=out_fd,
            report_fd=report_fd,
            timeout=timeout,
            oom_before=oom_before,
            future=loop.create_future(),
            lines=collections.deque(maxlen=self._config.last_words_lines),
        )
        self._children[pid] = child
        try:
            loop.add_reader(out_fd, self._on_output, child)
            loop.add_reader(report_fd, self._on_report, child)
            loop.add_reader(pidfd, self._on_exit, child)
            if timeout is not None:
                child.timer = loop.call_later(timeout, self._kill, child, KillReason.TIMEOUT)
            return await child.future
        except BaseException:
            self._abandon(child)  # cancelled (or broken): never leave the child behind
            raise

    def kill_all(self, reason: KillReason, *, grace_seconds: float | None = None) -> None:
        """SIGKILL every running child's process group, recording ``reason``.

        For the end of a shutdown grace period; ``grace_seconds`` goes into the
        message.  A child already killed for a timeout keeps that reason.
        """
        for child in list(self._children.values()):
            if child.grace is None:
                child.grace = grace_seconds
            self._kill(child, reason)

    # --- the fork --------------------------------------------------------------------

    def _fork(self, job: Job) -> tuple[int, int, int, int]:
        out_r, out_w = os.pipe()
        report_r, report_w = os.pipe()
        # Buffered text still in the parent's streams would be written twice.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        # Frozen, the parent's heap is never walked (so never copied) by the child's
        # GC; the parent thaws it at once so its own garbage stays collectable.  A
        # program that froze its heap on purpose keeps its freeze untouched.
        freeze = gc.get_freeze_count() == 0
        if freeze:
            gc.freeze()
        try:
            pid = os.fork()
        except BaseException:
            if freeze:
                gc.unfreeze()
            for fd in (out_r, out_w, report_r, report_w):
                os.close(fd)
            raise
        if pid == 0:
            execute.start_child(
                self._setup, job, output_fd=out_w, report_fd=report_w, close_fds=(out_r, report_r)
            )
        if freeze:
            gc.unfreeze()
        os.close(out_w)
        os.close(report_w)
        # Also set the group from this side, so that a kill sent before the child
        # has run its own setpgid already reaches the right group.
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            # Unsupervisable (Linux < 5.3?): do not leave it running.
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            for fd in (out_r, report_r):
                os.close(fd)
            raise
        os.set_blocking(out_r, False)
        os.set_blocking(report_r, False)
        return pid, pidfd, out_r, report_r

    # --- the parent's callbacks ----------------------------------------------------

    # Each callback first checks ``done``: a callback already scheduled in the same
    # loop iteration as a cancellation must not touch fds that were closed (and
    # whose numbers may already belong to another child).

    def _on_output(self, child: _Child) -> None:
        if child.done:
            return
        try:
            data = os.read(child.out_fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._take_output(child, data)
        else:
            asyncio.get_running_loop().remove_reader(child.out_fd)

    def _on_report(self, child: _Child) -> None:
        if child.done:
            return
        try:
            data = os.read(child.report_fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            child.report_chunks.append(data)
        else:
            asyncio.get_running_loop().remove_reader(child.report_fd)

    def _on_exit(self, child: _Child) -> None:
        if child.done:
            return
        try:
            ending = self._reap(child)
        except BaseException as e:
            if not child.future.done():
                child.future.set_exception(e)
            if not isinstance(e, Exception):
                raise
        else:
            if not child.future.done():
                child.future.set_result(ending)

    def _kill(self, child: _Child, reason: KillReason) -> None:
        if child.done:
            return
        if child.killed_by is None:
            child.killed_by = reason
        # The child is not reaped yet (done is False), so its pid, and with it the
        # group id, still belong to it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)

    # --- the end -------------------------------------------------------------------

    def _reap(self, child: _Child) -> Ending:
        """The child has exited (still a zombie): kill its leftovers, reap, gather facts."""
        runtime = time.monotonic() - child.started
        self._kill_leftovers(child)
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            self._close(child)
        peak = usage.ru_maxrss * 1024  # KiB on Linux
        cgroup = self._oom_cgroup
        oom_kills: int | None = None
        limit: int | None = None
        if cgroup is not None:
            after = cgroup.oom_kills()
            if after is not None and child.oom_before is not None:
                oom_kills = after - child.oom_before
            if os.WIFSIGNALED(status):
                limit = cgroup.limit_bytes()
        return Ending(
            pid=child.pid,
            wait_status=status,
            peak_rss_bytes=peak,
            runtime_seconds=runtime,
            report=self._parse_report(child),
            oom_kills=oom_kills,
            killed_by=child.killed_by,
            memory_limit_bytes=limit,
            timeout_seconds=child.timeout,
            grace_seconds=child.grace,
            last_words=tuple(child.lines),
        )

    def _kill_leftovers(self, child: _Child) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)

    def _close(self, child: _Child) -> None:
        """Drain what is already in the pipes, then close every fd of this child."""
        child.done = True
        self._children.pop(child.pid, None)
        if child.timer is not None:
            child.timer.cancel()
        loop = asyncio.get_running_loop()
        for fd in (child.pidfd, child.out_fd, child.report_fd):
            loop.remove_reader(fd)
        # Everything the child wrote before it exited is in the pipe now (a pipe
        # holds at most 1 MiB).  A grandchild may hold the write end open, so read
        # to EAGAIN, not to EOF, and only so much: one that escaped the group kill
        # could write forever.
        for data in _drain(child.out_fd):
            self._take_output(child, data)
        if child.partial:
            self._emit(child, child.partial)
            child.partial = b""
        child.report_chunks.extend(_drain(child.report_fd))
        for fd in (child.pidfd, child.out_fd, child.report_fd):
            os.close(fd)

    def _abandon(self, child: _Child) -> None:
        """The caller stopped waiting: kill the group and reap synchronously."""
        if child.done:
            return
        self._kill(child, KillReason.SHUTDOWN)
        try:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child.pid, 0)  # prompt: it was just SIGKILLed
        finally:
            self._close(child)
        log.warning(
            "job %s: supervision cancelled; killed pid %d and its process group",
            child.job.id,
            child.pid,
            extra={"job_id": child.job.id, "queue": child.job.queue},
        )

    def _parse_report(self, child: _Child) -> ChildReport | None:
        if not child.report_chunks:
            return None
        raw = b"".join(child.report_chunks)
        try:
            return ChildReport.from_json(raw)
        except (ValueError, KeyError, TypeError) as e:
            # Cut short by a kill mid-write, most likely: as good as no report.
            log.warning(
                "job %s: unreadable report from pid %d (%d bytes): %s",
                child.job.id,
                child.pid,
                len(raw),
                e,
                extra={"job_id": child.job.id, "queue": child.job.queue},
            )
            return None

    # --- output --------------------------------------------------------------------

    def _take_output(self, child: _Child, data: bytes) -> None:
        buffer = child.partial + data if child.partial else data
        *lines, rest = buffer.split(b"\n")
        for line in lines:
            self._emit(child, line)
        while len(rest) > _MAX_LINE:
            self._emit(child, rest[:_MAX_LINE])
            rest = rest[_MAX_LINE:]
        child.partial = rest

    def _emit(self, child: _Child, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        child.lines.append(line)
        if self._config.forward_output and job_log.isEnabledFor(logging.INFO):
            job = child.job
            job_log.info(
                "%s",
                line,
                extra={"job_id": job.id, "queue": job.queue, "child_pid": child.pid},
            )


def _drain(fd: int, limit: int = _DRAIN_LIMIT) -> list[bytes]:
    """What a non-blocking pipe holds right now, up to ``limit`` bytes."""
    chunks: list[bytes] = []
    total = 0
    with contextlib.suppress(OSError):  # BlockingIOError: nothing more for now
        while total < limit and (data := os.read(fd, _READ_SIZE)):
            chunks.append(data)
            total += len(data)
    return chunks

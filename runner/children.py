"""Fork one child per job, watch it, and gather the facts of its ending, on any event loop.

This module owns the process side of a job: ``fork``, the child's own process
group, its output pipe and report file, ``wait4``, timeouts and the runner's
own kills.  It hands an :class:`~sigrun.runner.exits.Ending` to a callback and
leaves the judging to :func:`sigrun.runner.exits.classify`.  It never imports
Redis and never decides what happens to a job next (retry, record, requeue).

Two hosts run it, which is why it depends on neither of their loops:

* :class:`sigrun.runner.supervise.Supervisor` runs it on the runner's own
  asyncio loop (children forked from the runner itself);
* the fork server (:mod:`sigrun.runner.forkserver`) runs it on a small epoll
  loop in a lean process, so that children are forked from a process without
  the Redis client and asyncio: a smaller process forks faster.

So it imports neither asyncio nor logging (logging imports threading, whose
fork hooks cost every child time).  The host passes a :class:`Reactor` (the
three loop methods used here, which an asyncio loop has) and callbacks for the
child's output lines and for warnings.

How one job runs (no threads, no SIGCHLD handler, no polling):

* the parent makes a pipe for the output and a memory file (``memfd``) for the
  report, freezes the GC heap so the child does not copy-on-write it, and forks;
* the child (:func:`sigrun.runner.execute.start_child`) takes a process group of
  its own, points stdout/stderr at the output pipe, joins ``child_cgroup``, raises
  its ``oom_score_adj``, runs the job and always ends in ``os._exit``;
* the parent watches a pidfd for the exit and reads the output as it comes
  (passing each line on and keeping the last ones as "last words"); the report
  it reads once, at the end: a file needs no reader while the child writes (a
  pipe would, past 64 KiB), so nobody is woken up for it;
* when the pidfd fires, the child is a zombie: its pid cannot be reused yet, so
  SIGKILL to its process group reaches only its leftovers (a job must not leak
  processes); then ``wait4`` gives the status and the peak RSS, the output pipe
  is drained without waiting for EOF (a grandchild may still hold it), the
  report is read, and the OOM-kill counter is read again.

With ``spare=True`` (the fork server's choice) one child is kept forked and set
up ahead of need, waiting on a pipe for its job, so taking a job costs a pipe
write instead of a fork and a set-up, and the spare is prepared while the runner
talks to Redis.  With ``settled=True``
(the fork server's choice too) the signals to reset and faulthandler are dealt
with once in the parent (see :meth:`sigrun.runner.execute.ChildSetup.of`).
Everything this module does per job after a fork costs copy-on-write faults,
which is why its hot path avoids pathlib, selectors and re-parsing.  A job's
clock (timeout, runtime) and its OOM-counter baseline start when it is handed
over, not when its process was forked.

A grandchild that moved to a process group of its own (``setsid``) escapes the
group kill; only a cgroup per job could catch those.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sigrun.runner import execute
from sigrun.runner.cgroup import MemoryCgroup
from sigrun.runner.exits import Ending, KillReason
from sigrun.runner.jobs import ChildReport, Job
from sigrun.runner.supervision import SupervisorConfig

__all__ = ["Child", "Children", "Reactor", "SupervisorConfig"]

_READ_SIZE = 65536
_MAX_LINE = 64 * 1024  # a "line" without a newline is cut here, so one cannot eat memory
_DRAIN_LIMIT = 2 << 20  # at exit, read at most this much more from each pipe
_SPARE_MAX_JOB = 60_000  # bytes; a pipe holds 64 KiB


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Reactor(Protocol):
    """The loop methods this module needs; an asyncio event loop has them."""

    def add_reader(self, fd: int, callback: Callable[..., object], *args: Any) -> None: ...
    def remove_reader(self, fd: int) -> bool: ...
    def call_later(
        self, delay: float, callback: Callable[..., object], *args: Any
    ) -> Cancellable: ...


#: Called once per child with its ending, or with the error that ended its supervision.
Done = Callable[[Ending | BaseException], None]
#: Called with each line the child wrote to stdout or stderr (when output is forwarded).
LineSink = Callable[[Job, int, str], None]
#: Called with a warning about one job (the host logs it).
WarningSink = Callable[[Job, str], None]


@dataclass(eq=False, slots=True)
class _Spare:
    """A child forked and set up ahead of need, waiting on ``job_fd`` for its job."""

    pid: int
    pidfd: int
    out_fd: int
    report_fd: int
    job_fd: int  # our (write) end of its job pipe


@dataclass(eq=False, slots=True, kw_only=True)
class Child:
    """The parent's bookkeeping for one running child."""

    job: Job
    pid: int
    pidfd: int
    out_fd: int
    report_fd: int
    reactor: Reactor
    done_callback: Done
    timeout: float | None
    oom_before: int | None
    lines: collections.deque[str]  # the last words
    started: float = field(default_factory=time.monotonic)
    killed_by: KillReason | None = None
    grace: float | None = None
    partial: bytes = b""  # an unfinished output line
    report: bytes = b""  # read from the report file once the child is gone
    timer: Cancellable | None = None
    done: bool = False  # reaped (or abandoned), fds closed


class Children:
    """The running children of one host process, any number at once."""

    def __init__(
        self,
        config: SupervisorConfig,
        *,
        on_line: LineSink | None,
        on_warning: WarningSink,
        close_in_child: Sequence[int] = (),
        spare: bool = False,
        settled: bool = False,
    ) -> None:
        self.config = config
        self._keep_spare = spare
        self._spare: _Spare | None = None
        self._on_line = on_line if config.forward_output else None
        self._on_warning = on_warning
        self._close_in_child = tuple(close_in_child)  # the host's own fds a job must not hold
        self._children: dict[int, Child] = {}  # by pid: a job id could come twice
        # v1 counts an OOM kill only in the victim's own cgroup, so read the one the
        # children are in.  Looked up once: a process does not change cgroup.
        self._oom_cgroup = config.child_cgroup or MemoryCgroup.of_process("self")
        self._oom_kills = _counter_of(self._oom_cgroup)
        self._setup = execute.ChildSetup.of(
            allowed_modules=config.allowed_modules,
            cgroup=config.child_cgroup,
            oom_score_adj=config.child_oom_score_adj,
            faulthandler=config.child_faulthandler,
            settled=settled,
        )

    @property
    def pids(self) -> set[int]:
        """Every process this object forked and has not reaped: children and the spare."""
        found = set(self._children)
        if self._spare is not None:
            found.add(self._spare.pid)
        return found

    @property
    def running(self) -> Mapping[str, int]:
        """Job id -> pid of every child not yet reaped."""
        return {child.job.id: pid for pid, child in self._children.items()}

    def start(self, job: Job, reactor: Reactor, done: Done, *, payload: bytes = b"") -> Child:
        """Fork a child for ``job``; ``done`` is called once, on ``reactor``, when it ended.

        ``payload``: the job's JSON as received, if at hand (saves encoding it again).
        """
        timeout = job.timeout if job.timeout is not None else self.config.default_timeout
        oom_before = self._oom_kills()
        spare, self._spare = self._spare, None
        if spare is not None and self._hand_over(spare, payload or job.to_json().encode(), reactor):
            pid, pidfd, out_fd, report_fd = spare.pid, spare.pidfd, spare.out_fd, spare.report_fd
        else:
            pid, pidfd, out_fd, report_fd = self._fork(job)
        child = Child(
            job=job,
            pid=pid,
            pidfd=pidfd,
            out_fd=out_fd,
            report_fd=report_fd,
            reactor=reactor,
            done_callback=done,
            timeout=timeout,
            oom_before=oom_before,
            lines=collections.deque(maxlen=self.config.last_words_lines),
        )
        self._children[pid] = child
        try:
            reactor.add_reader(out_fd, self._on_output, child)
            reactor.add_reader(pidfd, self._on_exit, child)
            if timeout is not None:
                child.timer = reactor.call_later(timeout, self.kill, child, KillReason.TIMEOUT)
        except BaseException:
            self.abandon(child)
            raise
        return child

    def prepare(self, reactor: Reactor) -> None:
        """Fork the spare now (with ``spare=True``), so even the first job finds one."""
        if self._keep_spare and self._spare is None:
            self._fork_spare(reactor)

    def close(self, reactor: Reactor) -> None:
        """Discard the spare, if there is one (running children are left alone)."""
        spare, self._spare = self._spare, None
        if spare is not None:
            self._discard(spare, reactor)

    def kill(self, child: Child, reason: KillReason) -> None:
        """SIGKILL the child's process group, recording why (the first reason stays)."""
        if child.done:
            return
        if child.killed_by is None:
            child.killed_by = reason
        # The child is not reaped yet (done is False), so its pid, and with it the
        # group id, still belong to it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)

    def kill_all(self, reason: KillReason, *, grace_seconds: float | None = None) -> None:
        """SIGKILL every running child's process group, recording ``reason``.

        For the end of a shutdown grace period; ``grace_seconds`` goes into the
        message.  A child already killed for a timeout keeps that reason.
        """
        for child in list(self._children.values()):
            if child.grace is None:
                child.grace = grace_seconds
            self.kill(child, reason)

    def abandon(self, child: Child) -> None:
        """The host stopped waiting: kill the group and reap synchronously; no callback."""
        if child.done:
            return
        self.kill(child, KillReason.SHUTDOWN)
        try:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child.pid, 0)  # prompt: it was just SIGKILLed
        finally:
            self._close(child)
        self._on_warning(
            child.job,
            f"job {child.job.id}: supervision cancelled; killed pid {child.pid}"
            " and its process group",
        )

    # --- the fork --------------------------------------------------------------------

    def _fork_spare(self, reactor: Reactor) -> None:
        job_r, job_w = os.pipe()
        try:
            pid, pidfd, out_fd, report_fd = self._fork(None, job_fd=job_r, close=(job_w,))
        except OSError:
            os.close(job_w)
            return  # no spare this time: the next job forks for itself
        finally:
            os.close(job_r)
        spare = _Spare(pid, pidfd, out_fd, report_fd, job_w)
        self._spare = spare
        reactor.add_reader(pidfd, self._on_spare_exit, spare, reactor)

    def _hand_over(self, spare: _Spare, data: bytes, reactor: Reactor) -> bool:
        """Give ``job`` to the waiting spare; False if it is gone or ``job`` is too big.

        A spare may be blocked writing import-time output that nobody reads until
        the hand-over: only a job that fits in the pipe's buffer goes to it.
        """
        if len(data) > _SPARE_MAX_JOB:
            self._discard(spare, reactor)
            return False
        try:
            view = memoryview(data)
            while view:  # fits in the pipe: one write, normally
                view = view[os.write(spare.job_fd, view) :]
        except OSError:
            self._discard(spare, reactor)
            return False
        os.close(spare.job_fd)
        reactor.remove_reader(spare.pidfd)  # from now on, an exit is the job's
        return True

    def _on_spare_exit(self, spare: _Spare, reactor: Reactor) -> None:
        """A spare ended before it had a job (killed from outside, most likely)."""
        if self._spare is spare:
            self._spare = None
            self._discard(spare, reactor)

    def _discard(self, spare: _Spare, reactor: Reactor) -> None:
        reactor.remove_reader(spare.pidfd)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(spare.pid, signal.SIGKILL)  # not reaped yet: the group is still its own
        with contextlib.suppress(ChildProcessError):
            os.waitpid(spare.pid, 0)
        for fd in (spare.pidfd, spare.out_fd, spare.report_fd, spare.job_fd):
            with contextlib.suppress(OSError):  # job_fd may be closed already
                os.close(fd)

    def _fork(
        self,
        job: Job | None,
        *,
        job_fd: int = -1,
        close: tuple[int, ...] = (),
    ) -> tuple[int, int, int, int]:
        out_r, out_w = os.pipe()
        report = os.memfd_create("sigrun-report", os.MFD_CLOEXEC)
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
            for fd in (out_r, out_w, report):
                os.close(fd)
            raise
        if pid == 0:
            execute.start_child(
                self._setup,
                job,
                output_fd=out_w,
                report_fd=report,
                close_fds=(out_r, *close, *self._close_in_child),
                job_fd=job_fd,
            )
        if freeze:
            gc.unfreeze()
        os.close(out_w)
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
            for fd in (out_r, report):
                os.close(fd)
            raise
        os.set_blocking(out_r, False)
        return pid, pidfd, out_r, report

    # --- the reactor's callbacks ---------------------------------------------------

    # Each callback first checks ``done``: a callback already scheduled in the same
    # loop iteration as a cancellation must not touch fds that were closed (and
    # whose numbers may already belong to another child).

    def _on_output(self, child: Child) -> None:
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
            child.reactor.remove_reader(child.out_fd)

    def _on_exit(self, child: Child) -> None:
        if child.done:
            return
        try:
            ending = self._reap(child)
        except BaseException as e:
            child.done_callback(e)
            if not isinstance(e, Exception):
                raise
        else:
            child.done_callback(ending)

    # --- the end -------------------------------------------------------------------

    def _reap(self, child: Child) -> Ending:
        """The child has exited (still a zombie): kill its leftovers, reap, gather facts."""
        runtime = time.monotonic() - child.started
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)  # its leftovers: a job must not leak processes
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            self._close(child)
        peak = usage.ru_maxrss * 1024  # KiB on Linux
        cgroup = self._oom_cgroup
        oom_kills: int | None = None
        limit: int | None = None
        after = self._oom_kills()
        if after is not None and child.oom_before is not None:
            oom_kills = after - child.oom_before
        if cgroup is not None and os.WIFSIGNALED(status):
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

    def _close(self, child: Child) -> None:
        """Drain what is already in the pipes, then close every fd of this child."""
        child.done = True
        self._children.pop(child.pid, None)
        if child.timer is not None:
            child.timer.cancel()
        for fd in (child.pidfd, child.out_fd):
            child.reactor.remove_reader(fd)
        # Everything the child wrote before it exited is in the pipe now (a pipe
        # holds at most 1 MiB).  A grandchild may hold the write end open, so read
        # to EAGAIN, not to EOF, and only so much: one that escaped the group kill
        # could write forever.
        for data in _drain(child.out_fd):
            self._take_output(child, data)
        if child.partial:
            self._emit(child, child.partial)
            child.partial = b""
        child.report = _read_all(child.report_fd)
        for fd in (child.pidfd, child.out_fd, child.report_fd):
            os.close(fd)

    def _parse_report(self, child: Child) -> ChildReport | None:
        raw = child.report
        if not raw:
            return None
        if raw == execute.OK_NONE:  # the commonest report, known by heart
            return _OK_NONE
        try:
            return ChildReport.from_json(raw)
        except (ValueError, KeyError, TypeError) as e:
            # Cut short by a kill mid-write, most likely: as good as no report.
            self._on_warning(
                child.job,
                f"job {child.job.id}: unreadable report from pid {child.pid}"
                f" ({len(raw)} bytes): {e}",
            )
            return None

    # --- output --------------------------------------------------------------------

    def _take_output(self, child: Child, data: bytes) -> None:
        buffer = child.partial + data if child.partial else data
        *lines, rest = buffer.split(b"\n")
        for line in lines:
            self._emit(child, line)
        while len(rest) > _MAX_LINE:
            self._emit(child, rest[:_MAX_LINE])
            rest = rest[_MAX_LINE:]
        child.partial = rest

    def _emit(self, child: Child, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        child.lines.append(line)
        if self._on_line is not None:
            self._on_line(child.job, child.pid, line)


_OK_NONE = ChildReport(ok=True)


def _counter_of(cgroup: MemoryCgroup | None) -> Callable[[], int | None]:
    """``cgroup.oom_kills`` as a closure that allocates little: it runs twice per job.

    Reads the same file as :meth:`MemoryCgroup.oom_kills` (``memory.events`` on
    v2, ``memory.oom_control`` on v1) and finds its ``oom_kill N`` line.
    """
    if cgroup is None:
        return lambda: None
    name = "memory.events" if cgroup.version == 2 else "memory.oom_control"
    path = os.fsencode(cgroup.path / name)
    flags = os.O_RDONLY | os.O_CLOEXEC

    def oom_kills() -> int | None:
        try:
            fd = os.open(path, flags)
        except OSError:
            return None
        try:
            text = b"\n" + os.read(fd, 4096)
        except OSError:
            return None
        finally:
            os.close(fd)
        at = text.find(b"\noom_kill ")
        if at < 0:
            return None  # v1 before Linux 4.13 has no counter
        end = text.find(b"\n", at + 10)
        return int(text[at + 10 : end if end > 0 else None])

    return oom_kills


def _read_all(fd: int) -> bytes:
    """The whole report file (written through the child's own offset, so read by position)."""
    try:
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0) if size else b""
    except OSError:
        return b""


def _drain(fd: int, limit: int = _DRAIN_LIMIT) -> list[bytes]:
    """What a non-blocking pipe holds right now, up to ``limit`` bytes."""
    chunks: list[bytes] = []
    total = 0
    with contextlib.suppress(OSError):  # BlockingIOError: nothing more for now
        while total < limit and (data := os.read(fd, _READ_SIZE)):
            chunks.append(data)
            total += len(data)
    return chunks

"""The runner's side of the fork server: a :class:`JobSupervisor` whose children fork elsewhere.

:class:`ForkServer` starts ``python -P -m sigrun.runner.forkserver`` (a fresh,
lean interpreter: see that module for why) and then behaves like
:class:`sigrun.runner.supervise.Supervisor`: ``await run(job)`` returns the
child's :class:`~sigrun.runner.exits.Ending`, ``running`` maps job ids to
pids, ``kill_all`` kills at the end of a shutdown grace period.  It talks to the
fork server through two pipes on the runner's asyncio loop and never blocks it.
Lines a child prints and warnings come back as messages and are logged here,
on the same loggers as the in-process supervisor uses.

The fork server sits in a process group of its own, so a terminal's Ctrl-C
reaches only the runner, which decides what happens to running jobs.  If the
fork server dies, every job it held fails with :class:`ForkServerLost`, and so
does every later :meth:`run`: the runner cannot supervise without it and should
exit; its in-flight jobs are then recorded by a reaper or the operator.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sigrun.runner import wire
from sigrun.runner.errors import SigrunError
from sigrun.runner.exits import Ending, KillReason
from sigrun.runner.jobs import Job
from sigrun.runner.supervision import SupervisorConfig

__all__ = ["ForkServer", "ForkServerLost"]

log = logging.getLogger(__name__)
job_log = logging.getLogger("sigrun.job")

_READ_SIZE = 1 << 20
_START_TIMEOUT = 60.0  # seconds for the fork server to import what it needs
_STOP_TIMEOUT = 10.0


class ForkServerLost(SigrunError):
    """The fork server is gone (or never came up): no job can be run or watched any more."""


@dataclass(eq=False)
class _Remote:
    job: Job
    future: asyncio.Future[Ending]
    pid: int | None = None


class ForkServer:
    """Runs jobs in children of a fork server process, any number at once."""

    def __init__(
        self, config: SupervisorConfig, *, preload: bool = False, python: str | None = None
    ) -> None:
        self._config = config
        self._preload = preload
        self._python = python or sys.executable
        self._process: subprocess.Popen[bytes] | None = None
        self._commands = -1  # our ends of the pipes
        self._events = -1
        self._out = bytearray()
        self._lines = wire.Lines()
        self._refs = itertools.count(1)
        self._remotes: dict[int, _Remote] = {}
        self._ready: asyncio.Future[int] | None = None
        self._lost: str | None = None  # why, once the fork server is gone

    @property
    def pid(self) -> int | None:
        """The fork server's pid (None before :meth:`start`)."""
        return self._process.pid if self._process else None

    @property
    def running(self) -> Mapping[str, int]:
        """Job id -> pid of every child not yet reaped."""
        return {r.job.id: r.pid for r in self._remotes.values() if r.pid is not None}

    async def start(self) -> None:
        """Start the fork server and wait until it is ready to fork."""
        loop = asyncio.get_running_loop()
        commands_r, commands_w = os.pipe()
        events_r, events_w = os.pipe()
        try:
            self._process = subprocess.Popen(
                [
                    self._python,
                    "-P",
                    "-m",
                    "sigrun.runner.forkserver",
                    str(commands_r),
                    str(events_w),
                ],
                pass_fds=(commands_r, events_w),
                stdin=subprocess.DEVNULL,
                process_group=0,
            )
        except BaseException:
            for fd in (commands_w, events_r):
                os.close(fd)
            raise
        finally:
            os.close(commands_r)
            os.close(events_w)
        self._commands, self._events = commands_w, events_r
        os.set_blocking(commands_w, False)
        os.set_blocking(events_r, False)
        loop.add_reader(events_r, self._on_events)
        self._ready = loop.create_future()
        # Lines nobody would log are not even sent.
        forward = self._config.forward_output and job_log.isEnabledFor(logging.INFO)
        config = dataclasses.replace(self._config, forward_output=forward)
        self._send(wire.config_to_json(config, sys_path=list(sys.path), preload=self._preload))
        try:
            pid = await asyncio.wait_for(self._ready, _START_TIMEOUT)
        except TimeoutError:
            await self.close()
            raise ForkServerLost(f"the fork server did not start in {_START_TIMEOUT:g}s") from None
        log.debug("fork server ready, pid %d", pid)

    async def run(self, job: Job) -> Ending:
        """Run ``job`` in a new child and return how it ended.

        If the awaiting task is cancelled, the fork server is told to kill and reap
        the child's whole process group; the cancellation does not wait for it.
        """
        if self._lost is not None:
            raise ForkServerLost(self._lost)
        if self._ready is None:
            raise ForkServerLost("the fork server was not started")
        ref = next(self._refs)
        future: asyncio.Future[Ending] = asyncio.get_running_loop().create_future()
        self._remotes[ref] = _Remote(job, future)
        self._send({"op": "run", "ref": ref, "queue": job.queue, "job": job.to_json()})
        try:
            return await future
        except BaseException:
            if self._remotes.pop(ref, None) is not None and self._lost is None:
                self._send({"op": "abandon", "ref": ref})
            raise

    def kill_all(self, reason: KillReason, *, grace_seconds: float | None = None) -> None:
        """SIGKILL every running child's process group, recording ``reason``."""
        if self._lost is None and self._ready is not None:
            self._send({"op": "kill_all", "reason": reason.value, "grace": grace_seconds})

    async def close(self) -> None:
        """Stop the fork server (it exits once its command pipe closes) and wait for it."""
        process = self._process
        if process is None:
            return
        self._process = None
        loop = asyncio.get_running_loop()
        if self._commands >= 0:
            loop.remove_writer(self._commands)
            os.close(self._commands)
            self._commands = -1
        deadline = loop.time() + _STOP_TIMEOUT
        while process.poll() is None and loop.time() < deadline:
            await asyncio.sleep(0.005)
        if process.poll() is None:
            process.kill()
            process.wait()
        if self._events >= 0:
            loop.remove_reader(self._events)
            os.close(self._events)
            self._events = -1
        self._lose("the fork server was stopped")

    # --- the pipes -------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        data = wire.encode(message)
        if self._out:
            self._out += data
            return
        try:
            written = os.write(self._commands, data)
        except BlockingIOError:
            written = 0
        except OSError:
            return  # the fork server is gone; its event pipe's end of file says so
        if written < len(data):
            self._out += data[written:]
            asyncio.get_running_loop().add_writer(self._commands, self._on_writable)

    def _on_writable(self) -> None:
        try:
            written = os.write(self._commands, self._out)
        except BlockingIOError:
            return
        except OSError:
            written = len(self._out)
        del self._out[:written]
        if not self._out:
            asyncio.get_running_loop().remove_writer(self._commands)

    def _on_events(self) -> None:
        while True:
            try:
                data = os.read(self._events, _READ_SIZE)
            except BlockingIOError:
                return
            if not data:
                asyncio.get_running_loop().remove_reader(self._events)
                code = self._process.poll() if self._process else None
                self._lose(f"the fork server (pid {self.pid}) exited (code {code})")
                return
            for line in self._lines.feed(data):
                self._handle(wire.decode(line))

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event["ev"]
        if kind == "line":
            remote = self._remotes.get(event["ref"])
            if remote is not None and job_log.isEnabledFor(logging.INFO):
                job = remote.job
                extra = {"job_id": job.id, "queue": job.queue, "child_pid": remote.pid}
                job_log.info("%s", event["line"], extra=extra)
        elif kind == "ended":
            remote = self._remotes.pop(event["ref"], None)
            if remote is not None and not remote.future.done():
                remote.future.set_result(wire.ending_from_json(event["ending"]))
        elif kind == "started":
            remote = self._remotes.get(event["ref"])
            if remote is not None:
                remote.pid = event["pid"]
        elif kind == "failed":
            remote = self._remotes.pop(event["ref"], None)
            if remote is not None and not remote.future.done():
                remote.future.set_exception(OSError(event["errno"], event["error"]))
        elif kind == "warning":
            extra = {"job_id": event["job_id"], "queue": event["queue"]}
            log.warning("%s", event["message"], extra=extra)
        elif kind == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(event["pid"])
        else:
            log.warning("fork server sent an unknown event %r", kind)

    def _lose(self, why: str) -> None:
        """Fail everything still waiting; later calls fail at once."""
        if self._lost is None:
            self._lost = why
        for remote in self._remotes.values():
            if not remote.future.done():
                remote.future.set_exception(
                    ForkServerLost(f"{why}; job {remote.job.id} is no longer supervised")
                )
        self._remotes.clear()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(ForkServerLost(why))
        self._out.clear()

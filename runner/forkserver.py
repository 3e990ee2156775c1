"""The fork server: a lean process that forks and watches every job's child for the runner.

Why a second process: fork costs time in proportion to the parent's memory
(page tables to copy, then a copy-on-write fault for each page the child
touches), and the runner holds the Redis client, asyncio and its own state, all
of which a job needs none of.  This process imports only what a child needs
(:mod:`sigrun.runner.execute` and the supervision core), so each fork is about
half as expensive, and the fork, the child and its reaping run on a second core
while the runner talks to Redis.  It must therefore never import asyncio,
logging, threading or redis; ``tests/unit/test_wire.py`` checks that.

What it does: it runs :class:`sigrun.runner.children.Children` on a small
epoll loop (:mod:`sigrun.runner.reactor`) and relays between it and the
runner, in the messages of :mod:`sigrun.runner.wire`.  It keeps one spare child
forked and set up ahead of need (see that module), forked right after it has
reported a job's end, while the runner records it.  All process-side
semantics -- process group, output and last words, timeouts, the OOM counter,
``wait4`` -- are the ones the in-process supervisor has, because it is the same
code.  Deciding, recording and logging stay in the runner.

With ``preload`` (the default; ``sigrun work --no-preload`` turns it off) it
imports a job's module the first time a job of it arrives, if the allow-list
allows it, so later children find it already imported: a child then costs what
a fork from a loaded parent costs (Resque's model), not a fork plus an import.
That runs the module's top-level code in this process, so a module that starts
threads or opens connections at import time must not be preloaded (the caveat
of gunicorn's ``--preload``).  Without it, each child imports its job's module.
A child that had to import asyncio (a coroutine job) says so through
:data:`sigrun.runner.execute.asyncio_hint`; asyncio is then imported here once,
so later coroutine jobs do not pay for it.

It is also a child subreaper: a process a job started outside its process group
is handed to it, not to PID 1, when its parent dies, and it reaps those that exit
(:mod:`sigrun.runner.orphans`), since a runner that is PID 1 in its container
would leave them zombies.

If the runner goes away (end of file on the command pipe), this process exits
and leaves running children alone, as a runner that dies leaves its own.

Started by :class:`sigrun.runner.forkclient.ForkServer` as
``python -P -m sigrun.runner.forkserver COMMANDS_FD EVENTS_FD``.
"""

from __future__ import annotations

import importlib
import mmap
import os
import sys
from typing import Any

from sigrun.runner import execute, orphans, preload, wire
from sigrun.runner.children import Child, Children
from sigrun.runner.exits import Ending, KillReason
from sigrun.runner.jobs import Job
from sigrun.runner.reactor import Reactor

_READ_SIZE = 1 << 20


class Server:
    """The fork server's state: the children, and the two pipes to the runner."""

    def __init__(self, commands: int, events: int) -> None:
        self._commands = commands
        self._events = events
        self._reactor = Reactor()
        self._lines = wire.Lines()
        self._out = bytearray()  # events not yet written
        self._writing = False  # waiting for the event pipe to take more
        self._children: Children | None = None  # made from the first message, the config
        self._by_ref: dict[int, Child] = {}
        self._ref_of_pid: dict[int, int] = {}
        self._preload = False
        self._preload_tried: set[str] = set()
        self._open = True

    def serve(self) -> None:
        os.set_blocking(self._commands, False)
        os.set_blocking(self._events, False)
        execute.asyncio_hint = mmap.mmap(-1, 1)  # shared with every child forked from here
        self._reactor.add_reader(self._commands, self._on_commands)
        while self._open:
            self._reactor.run_once()
            self._flush()
        if self._children is not None:
            # The runner is gone (a clean exit waits for its jobs first, so this is a
            # runner killed outright): nobody could record what a child still running
            # does, and the job will be run again once the reaper finds it, so stop it
            # rather than let it run twice.
            self._children.kill_all(KillReason.SHUTDOWN)
            self._children.close(self._reactor)

    # --- commands --------------------------------------------------------------------

    def _on_commands(self) -> None:
        while True:
            try:
                data = os.read(self._commands, _READ_SIZE)
            except BlockingIOError:
                return
            if not data:  # the runner is gone
                self._open = False
                self._reactor.remove_reader(self._commands)
                return
            for line in self._lines.feed(data):
                self._handle(wire.decode(line))

    def _handle(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "run":
            self._run(message)
        elif op == "abandon":
            child = self._by_ref.pop(message["ref"], None)
            if child is not None:
                self._ref_of_pid.pop(child.pid, None)
                self._ready().abandon(child)
        elif op == "kill_all":
            self._ready().kill_all(KillReason(message["reason"]), grace_seconds=message["grace"])
        elif op == "config":
            config, sys_path, self._preload = wire.config_from_json(message)
            sys.path[:] = sys_path
            self._children = Children(
                config,
                on_line=self._on_line,
                on_warning=self._on_warning,
                close_in_child=(self._commands, self._events, self._reactor.fileno()),
                spare=True,
                settled=True,
            )
            self._children.prepare(self._reactor)
            if orphans.become_subreaper():
                self._reactor.call_later(orphans.REAP_INTERVAL_SECONDS, self._reap_orphans)
            self._send({"ev": "ready", "pid": os.getpid()})
        else:
            raise ValueError(f"unknown command {op!r}")

    def _run(self, message: dict[str, Any]) -> None:
        ref: int = message["ref"]
        job = Job.from_json(message["job"], queue=message["queue"])
        children = self._ready()
        if self._preload:
            self._import_module_of(job, children.config.allowed_modules)
        try:
            child = children.start(
                job,
                self._reactor,
                lambda result: self._ended(ref, result),
                payload=message["job"].encode(),
            )
        except OSError as e:
            self._send({"ev": "failed", "ref": ref, "errno": e.errno, "error": str(e)})
            return
        self._by_ref[ref] = child
        self._ref_of_pid[child.pid] = ref
        self._send({"ev": "started", "ref": ref, "pid": child.pid})

    def _ready(self) -> Children:
        if self._children is None:
            raise RuntimeError("the runner sent a command before the config")
        return self._children

    def _import_module_of(self, job: Job, allowed: tuple[str, ...]) -> None:
        module = job.func.partition(":")[0]
        if module in sys.modules or module in self._preload_tried:
            return
        self._preload_tried.add(module)
        if not execute.is_allowed(module, allowed):
            return  # the child refuses it, with the reason
        done = preload.preload(module)
        for line in done.output:
            self._on_warning(job, f"module {module!r} printed while preloading: {line}")
        e = done.error
        if (
            isinstance(e, ModuleNotFoundError)
            and e.name
            and (module + ".").startswith(e.name + ".")
        ):
            return  # no such module: each of its jobs reports FunctionNotFound
        if e is not None:
            self._on_warning(
                job,
                f"preloading module {module!r} failed ({type(e).__name__}: {e});"
                " each of its jobs imports it itself, on its own clock",
            )
        if done.threads_started:
            self._on_warning(
                job,
                f"module {module!r} left {done.threads_started} thread(s) running in the fork"
                " server after its import: a child is forked with none of them, and a lock"
                " one of them held stays locked in the child forever (a hang). Run this"
                " queue with --no-preload (spec.runner.preload: false)",
            )

    def _reap_orphans(self) -> None:
        """Reap the processes jobs left behind that have exited (see :mod:`.orphans`)."""
        orphans.reap(self._ready().pids)
        self._reactor.call_later(orphans.REAP_INTERVAL_SECONDS, self._reap_orphans)

    # --- events ----------------------------------------------------------------------

    def _ended(self, ref: int, result: Ending | BaseException) -> None:
        child = self._by_ref.pop(ref, None)
        if child is not None:
            self._ref_of_pid.pop(child.pid, None)
        if isinstance(result, BaseException):
            errno = result.errno if isinstance(result, OSError) else None
            self._send({"ev": "failed", "ref": ref, "errno": errno, "error": repr(result)})
        else:
            self._send({"ev": "ended", "ref": ref, "ending": wire.ending_to_json(result)})
        self._flush()  # the runner can go on while the next spare is forked
        self._ready().prepare(self._reactor)
        hint = execute.asyncio_hint
        if hint is not None and hint[0] and "asyncio" not in sys.modules:
            importlib.import_module("asyncio")

    def _on_line(self, job: Job, pid: int, line: str) -> None:
        ref = self._ref_of_pid.get(pid)
        if ref is not None:
            self._send({"ev": "line", "ref": ref, "line": line})

    def _on_warning(self, job: Job, message: str) -> None:
        self._send({"ev": "warning", "job_id": job.id, "queue": job.queue, "message": message})

    def _send(self, message: dict[str, Any]) -> None:
        self._out += wire.encode(message)

    def _flush(self) -> None:
        """Write what the loop iteration produced, in one go; never block on the runner."""
        while self._out:
            try:
                written = os.write(self._events, self._out)
            except BlockingIOError:
                if not self._writing:
                    self._writing = True
                    self._reactor.add_writer(self._events, self._on_writable)
                return
            except BrokenPipeError:  # the runner is gone
                self._out.clear()
                self._open = False
                return
            del self._out[:written]
        if self._writing:
            self._writing = False
            self._reactor.remove_writer(self._events)

    def _on_writable(self) -> None:
        """Nothing to do here: :meth:`_flush` runs after every loop iteration."""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -P -m sigrun.runner.forkserver COMMANDS_FD EVENTS_FD", file=sys.stderr)
        return 2
    Server(int(args[0]), int(args[1])).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())

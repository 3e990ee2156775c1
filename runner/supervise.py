"""Run jobs in children forked from this process, on the caller's asyncio loop.

:class:`Supervisor` is the in-process way to run jobs: the process side (fork,
process group, pipes, ``wait4``, timeouts, kills) is
:class:`sigrun.runner.children.Children`; this module puts it on the running
asyncio loop, turns its callback into an awaitable, and logs what it reports:
each line a child prints goes to the ``sigrun.job`` logger with the job id and
queue.  It never imports Redis and never decides what happens to a job next.

The runner itself uses the fork server (:mod:`sigrun.runner.forkclient`),
which has the same interface, :class:`JobSupervisor`, and forks from a leaner
process; this one serves tests, tools and ``sigrun work --no-fork-server``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from sigrun.runner.children import Children
from sigrun.runner.exits import Ending, KillReason
from sigrun.runner.jobs import Job
from sigrun.runner.supervision import JobSupervisor, SupervisorConfig

__all__ = ["JobSupervisor", "Supervisor", "SupervisorConfig"]

log = logging.getLogger(__name__)
job_log = logging.getLogger("sigrun.job")


class Supervisor:
    """Runs jobs in forked children, any number at once, on the caller's event loop."""

    def __init__(self, config: SupervisorConfig) -> None:
        self._config = config
        self._children = Children(config, on_line=_log_line, on_warning=_warn)

    @property
    def running(self) -> Mapping[str, int]:
        """Job id -> pid of every child not yet reaped."""
        return self._children.running

    async def start(self) -> None:
        """Nothing to start: children are forked from this process."""

    async def close(self) -> None:
        """Nothing to stop."""

    async def run(self, job: Job) -> Ending:
        """Run ``job`` in a new child and return how it ended.

        If the awaiting task is cancelled, the child's whole process group is
        killed and reaped before the cancellation goes on: no orphan is left.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Ending] = loop.create_future()

        def done(result: Ending | BaseException) -> None:
            if future.done():
                return
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

        child = self._children.start(job, loop, done)
        try:
            return await future
        except BaseException:
            self._children.abandon(child)  # cancelled (or broken): never leave the child behind
            raise

    def kill_all(self, reason: KillReason, *, grace_seconds: float | None = None) -> None:
        """SIGKILL every running child's process group, recording ``reason``.

        For the end of a shutdown grace period; ``grace_seconds`` goes into the
        message.  A child already killed for a timeout keeps that reason.
        """
        self._children.kill_all(reason, grace_seconds=grace_seconds)


def _log_line(job: Job, pid: int, line: str) -> None:
    if job_log.isEnabledFor(logging.INFO):
        job_log.info("%s", line, extra={"job_id": job.id, "queue": job.queue, "child_pid": pid})


def _warn(job: Job, message: str) -> None:
    log.warning("%s", message, extra={"job_id": job.id, "queue": job.queue})

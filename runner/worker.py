"""``sigrun work``: take jobs from Redis, run each in a forked child, record how it ended.

One asyncio loop does the Redis talking; each of ``concurrency`` slots takes a
job, hands it to the supervisor (which forks and waits) and writes the
outcome.  The loop never blocks on a child, so a slot that waits for a job on
an idle queue (BLMOVE) does not delay the others.

The supervisor is by default the fork server (:mod:`sigrun.runner.forkclient`):
children are forked from a lean second process, not from this one, which keeps
forks cheap and lets the forking run on another core while this loop talks to
Redis.  A busy slot writes a job's outcome and takes its next job in one round
trip (:meth:`Store.finish_and_reserve`).

What it guarantees:

* At least once: a job sits in this runner's in-flight list from the moment it
  is taken until its outcome is written.  If the runner dies, the list is still
  there for a reaper or the operator.
* Shutdown (SIGTERM/SIGINT) loses nothing: stop taking jobs, let running
  children finish within the grace period, then kill and requeue the rest (cause
  Shutdown, no attempt spent).  A second signal ends the wait at once.
* Redis going away: children keep running; outcomes are written once Redis is
  back, with backoff in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from sigrun.runner.cgroup import MemoryCgroup
from sigrun.runner.config import WorkerConfig, identity_from_env
from sigrun.runner.errors import PayloadError
from sigrun.runner.exits import KillReason, classify
from sigrun.runner.forkclient import ForkServer
from sigrun.runner.jobs import (
    Cause,
    Job,
    Outcome,
    RunnerIdentity,
    State,
    Verdict,
    job_id_of_raw,
    now,
)
from sigrun.runner.policy import Decision, decide
from sigrun.runner.protocol import Store
from sigrun.runner.reaper import reap, synthetic_id
from sigrun.runner.records import bad_payload_record, record_for
from sigrun.runner.redisio import CONNECTION_ERRORS
from sigrun.runner.supervision import JobSupervisor, SupervisorConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long one BLMOVE blocks before the slot looks around again (seconds).
_BLOCK_SECONDS = 2.0
_RETRY_MIN, _RETRY_MAX = 0.2, 10.0


@dataclass(frozen=True)
class _Taken:
    queue: str
    payload: str
    needs_running_mark: bool  # BLMOVE cannot set the state the way the reserve script does


class Worker:
    def __init__(
        self,
        config: WorkerConfig,
        store: Store,
        *,
        identity: RunnerIdentity | None = None,
        supervisor: JobSupervisor | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.identity = identity or identity_from_env()
        self.supervisor = supervisor or _supervisor_for(config)
        self.started_at = now()
        self._stopping = asyncio.Event()
        self._hurry = asyncio.Event()  # a second signal: end the grace period now
        self._signals = 0
        self._active = 0  # slots running a job right now
        self._changed = asyncio.Event()  # a slot finished a job (burst mode re-checks)
        self._drained = False
        self._stop_at = 0.0
        self._taking: set[asyncio.Task[_Taken | None]] = set()
        self._running: dict[
            str, str
        ] = {}  # job id -> queue, for heartbeats and the termination log

    @property
    def runner_id(self) -> str:
        return self.identity.runner_id

    # -- the whole run ---------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        log.info(
            "runner %s: queues %s, concurrency %d%s",
            self.runner_id,
            ",".join(self.config.queues),
            self.config.concurrency,
            ", burst" if self.config.burst else "",
        )
        try:
            await self.supervisor.start()
            await self._retrying(
                "register",
                lambda: self.store.register(self.identity, self.config.queues),
                until_stopped=True,
            )
            await self._beat()
            beating = asyncio.create_task(self._heartbeats())
            slots = [asyncio.create_task(self._slot()) for _ in range(self.config.concurrency)]
            await self._until_done(slots)
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
            await self._give_back_untouched()
            await self._retrying(
                "deregister", lambda: self.store.deregister(self.runner_id, self.config.queues)
            )
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.supervisor.close()
        log.info("runner %s stopped", self.runner_id)

    async def _until_done(self, slots: list[asyncio.Task[None]]) -> None:
        """Wait for the slots; once asked to stop, give running jobs the grace period."""
        stopping = asyncio.create_task(self._stopping.wait())
        await asyncio.wait([*slots, stopping], return_when=asyncio.FIRST_COMPLETED)
        if self._stopping.is_set():
            for task in list(self._taking):
                task.cancel()
            if self._active:
                log.info(
                    "stopping: waiting up to %gs for %d running job(s)",
                    self.config.grace_seconds,
                    self._active,
                )
            hurry = asyncio.create_task(self._hurry.wait())
            while (
                not all(slot.done() for slot in slots)
                and not hurry.done()
                and (left := self._grace_left()) > 0
            ):
                await asyncio.wait(
                    [*slots, hurry], timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
            if not all(s.done() for s in slots):
                log.warning(
                    "grace period over: killing %d job(s) and requeueing them", self._active
                )
                self.supervisor.kill_all(
                    KillReason.SHUTDOWN, grace_seconds=self.config.grace_seconds
                )
            hurry.cancel()
        stopping.cancel()
        await asyncio.gather(*slots, return_exceptions=False)

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("%s: no new jobs; finishing running ones", signal.Signals(sig).name)
            self._stop_at = now()
            self._stopping.set()
        else:
            log.warning("%s again: ending the grace period now", signal.Signals(sig).name)
            self._hurry.set()

    def _grace_left(self) -> float:
        return self._stop_at + self.config.grace_seconds - now()

    # -- one slot --------------------------------------------------------------

    async def _slot(self) -> None:
        while not self._stopping.is_set() and not self._drained:
            taking = asyncio.create_task(self._take())
            self._taking.add(taking)
            try:
                taken = await taking
            except asyncio.CancelledError:
                if self._stopping.is_set():
                    return
                raise
            finally:
                self._taking.discard(taking)
            if taken is not None:
                self._active += 1
                try:
                    # Each outcome is written together with taking the next job; a
                    # job taken as the runner began to stop is left in flight and
                    # given back by _give_back_untouched.
                    while taken is not None and not self._stopping.is_set():
                        taken = await self._run(taken)
                finally:
                    self._active -= 1
                    self._changed.set()
            elif self.config.burst:
                if self._active == 0:
                    self._drained = True
                    self._changed.set()
                    return
                self._changed.clear()
                await self._changed.wait()

    async def _take(self) -> _Taken | None:
        """The next job of any queue, in the order the queues were given."""
        while True:
            try:
                return await self._take_once()
            except CONNECTION_ERRORS as e:
                await self._redis_down("take a job", e)

    async def _take_once(self) -> _Taken | None:
        while not self._stopping.is_set():
            for queue in self.config.queues:
                payload = await self.store.reserve(queue, self.runner_id, now())
                if payload is not None:
                    return _Taken(queue, payload, needs_running_mark=False)
            # Retries whose backoff is over go back to their queues now, not at the next
            # heartbeat: "retrying in 0.5s" should mean half a second.
            if await self._promote_due():
                continue
            due = await self.store.next_due(self.config.queues)
            if self.config.burst:
                # A batch run is not done while retries wait out their backoff: wait for
                # the next one to fall due rather than leave it behind in Redis.
                if due is None:
                    return None  # a running job may yet add work: the slot re-checks
                await asyncio.sleep(min(1.0, max(0.01, due - now())))
                continue
            # Idle: block on one queue at a time, rotating, until something arrives or
            # the next retry falls due.
            block = _BLOCK_SECONDS if len(self.config.queues) == 1 else 0.5
            if due is not None:
                block = min(block, max(0.05, due - now()))
            for queue in self.config.queues:
                payload = await self.store.wait_reserve(queue, self.runner_id, block)
                if payload is not None:
                    return _Taken(queue, payload, needs_running_mark=True)
        return None

    async def _promote_due(self) -> int:
        promoted = 0
        for queue in self.config.queues:
            promoted += await self.store.promote(queue, now())
        return promoted

    async def _run(self, taken: _Taken) -> _Taken | None:
        """Run one job and record its outcome; return the next job if one came with it."""
        try:
            job = Job.from_json(taken.payload, queue=taken.queue)
        except PayloadError as e:
            await self._reject(taken, str(e))
            return None
        extra = {"job_id": job.id, "queue": job.queue}
        log.info(
            "job %s %s started (attempt %d of %d)",
            job.id,
            job.func,
            job.attempt,
            job.max_attempts,
            extra=extra,
        )
        self._running[job.id] = job.queue
        self._write_termination_log()
        if taken.needs_running_mark:  # mark it in Redis while the child already runs
            child = asyncio.create_task(self.supervisor.run(job))
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self.store.mark_running(job, self.runner_id, now())
            ending = await child
        else:
            ending = await self.supervisor.run(job)
        del self._running[job.id]
        self._write_termination_log()

        verdict = classify(ending)
        at = now()
        decision = decide(job, verdict, now=at, backoff=self.config.backoff)
        record = record_for(job, verdict, decision, identity=self.identity, now=at, ending=ending)
        result = ending.report.result if ending.report and ending.report.ok else None

        def finish() -> Awaitable[bool]:
            return self.store.finish(
                queue=job.queue,
                runner_id=self.runner_id,
                held_payload=taken.payload,
                job_id=job.id,
                verdict=verdict,
                decision=decision,
                record=record,
                result=result,
                now=at,
            )

        following: _Taken | None = None
        if self._stopping.is_set():
            written = await self._retrying(f"record job {job.id}", finish)
        else:
            first = self.config.queues[0]  # the next job comes from the first queue, if any
            try:
                written, payload = await self.store.finish_and_reserve(
                    queue=job.queue,
                    runner_id=self.runner_id,
                    held_payload=taken.payload,
                    job_id=job.id,
                    verdict=verdict,
                    decision=decision,
                    record=record,
                    result=result,
                    now=at,
                    reserve_from=first,
                )
            except CONNECTION_ERRORS as e:
                log.warning("cannot record job %s: Redis unavailable (%s); retrying", job.id, e)
                written = await self._retrying(f"record job {job.id}", finish)
            else:
                if payload is not None:
                    following = _Taken(first, payload, needs_running_mark=False)
        _log_outcome(
            job, verdict, decision, record.message if record else "", ending.runtime_seconds
        )
        if not written:
            log.warning(
                "job %s was already recorded by someone else (a reaper or the operator) "
                "while this runner could not reach Redis; this outcome is dropped",
                job.id,
                extra=extra,
            )
        return following

    async def _reject(self, taken: _Taken, reason: str) -> None:
        """A payload that is not a job: record it as failed, keep running."""
        at = now()
        job_id = job_id_of_raw(taken.payload) or synthetic_id(taken.payload)
        record = bad_payload_record(
            taken.payload, taken.queue, reason, job_id=job_id, identity=self.identity, now=at
        )
        log.error(
            "job %s rejected: %s",
            job_id,
            record.message,
            extra={"job_id": job_id, "queue": taken.queue},
        )
        await self._retrying(
            f"record bad payload {job_id}",
            lambda: self.store.finish(
                queue=taken.queue,
                runner_id=self.runner_id,
                held_payload=taken.payload,
                job_id=job_id,
                verdict=Verdict(Outcome.FAILED, Cause.BAD_PAYLOAD, record.message),
                decision=Decision(State.FAILED),
                record=record,
                result=None,
                now=at,
            ),
        )

    # -- background duties -----------------------------------------------------

    async def _heartbeats(self) -> None:
        last_reap = 0.0
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            try:
                await self._beat()
                for queue in self.config.queues:
                    await self.store.promote(queue, now())
                if now() - last_reap >= self.config.reap_interval:
                    last_reap = now()
                    await reap(
                        self.store,
                        backoff=self.config.backoff,
                        now=last_reap,
                        queues=self.config.queues,
                    )
            except CONNECTION_ERRORS as e:
                log.warning("heartbeat: Redis unavailable (%s); retrying", e)

    async def _beat(self) -> None:
        await self.store.heartbeat(
            self.identity,
            queues=self.config.queues,
            job_ids=list(self._running),
            rss={
                job_id: rss
                for job_id, pid in self.supervisor.running.items()
                if (rss := resident_bytes(pid)) is not None
            },
            concurrency=self.config.concurrency,
            started_at=self.started_at,
            now=now(),
            ttl_seconds=self.config.heartbeat_ttl,
        )

    async def _give_back_untouched(self) -> None:
        """Requeue jobs taken but never started (a BLMOVE that landed as we stopped)."""
        for queue in self.config.queues:
            for payload in await self._inflight(queue):
                job_id = job_id_of_raw(payload) or ""
                if job_id in self._running:
                    continue
                if await self.store.requeue(queue, self.runner_id, payload, job_id):
                    log.info(
                        "job %s requeued: taken but not started before shutdown",
                        job_id,
                        extra={"job_id": job_id, "queue": queue},
                    )

    async def _inflight(self, queue: str) -> list[str]:
        return await self._retrying(
            "list in-flight jobs", lambda: self.store.inflight(queue, self.runner_id)
        )

    def _write_termination_log(self) -> None:
        """Tell the kubelet (and so the operator) which jobs this container holds right now."""
        path = self.config.termination_log
        if not path:
            return
        body = json.dumps({"runner": self.runner_id, "jobs": list(self._running)})[:4000]
        try:
            with open(path, "w") as f:
                f.write(body)
        except OSError as e:
            log.debug("cannot write termination log %s: %s", path, e)

    # -- Redis trouble ---------------------------------------------------------

    async def _retrying(
        self, what: str, call: Callable[[], Awaitable[T]], *, until_stopped: bool = False
    ) -> T:
        """Run ``call`` until Redis answers: a job's outcome must not be lost to a blip.

        But a runner asked to stop must stop, Redis or not.  Once stopping, this
        keeps trying only until the grace period is over (or a second signal), then
        re-raises: whatever the runner still holds stays in its in-flight list,
        where a reaper finds it once the heartbeat expires, and runs it again.
        ``until_stopped``: give up as soon as the runner is asked to stop (nothing
        is held yet: registering).
        """
        delay = _RETRY_MIN
        while True:
            try:
                return await call()
            except CONNECTION_ERRORS as e:
                if self._stopping.is_set() and (
                    until_stopped or self._hurry.is_set() or self._grace_left() <= 0
                ):
                    log.error(
                        "cannot %s: Redis unavailable (%s); stopping anyway: what this runner "
                        "holds is recorded by a reaper once its heartbeat expires",
                        what,
                        e,
                    )
                    raise
                log.warning("cannot %s: Redis unavailable (%s); retrying in %.1fs", what, e, delay)
                await self._pause(delay)
                delay = min(_RETRY_MAX, delay * 2)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, waking early when a signal changes what the runner should do."""
        wake = self._hurry if self._stopping.is_set() else self._stopping
        if self._stopping.is_set():
            seconds = max(0.0, min(seconds, self._grace_left()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=seconds)

    async def _redis_down(self, what: str, error: BaseException) -> None:
        log.warning("cannot %s: Redis unavailable (%s)", what, error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=1.0)


def _supervisor_for(config: WorkerConfig) -> JobSupervisor:
    cgroup = MemoryCgroup.at(config.child_cgroup) if config.child_cgroup else None
    supervision = SupervisorConfig(
        allowed_modules=config.allowed_modules,
        default_timeout=config.default_timeout,
        child_cgroup=cgroup,
    )
    if config.fork_server:
        return ForkServer(supervision, preload=config.preload)
    # Only here: the in-process supervisor brings the fork code (see supervision.py).
    from sigrun.runner.supervise import Supervisor  # noqa: PLC0415

    return Supervisor(supervision)


def resident_bytes(pid: int) -> int | None:
    """A child's resident memory now, from /proc (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _log_outcome(
    job: Job, verdict: Verdict, decision: Decision, message: str, runtime: float
) -> None:
    extra = {"job_id": job.id, "queue": job.queue}
    if verdict.outcome is Outcome.SUCCEEDED:
        log.info("job %s %s succeeded in %.3fs", job.id, job.func, runtime, extra=extra)
    elif verdict.outcome is Outcome.DIRTY:
        log.warning("job %s %s DirtyExit: %s", job.id, job.func, message, extra=extra)
    else:
        log.warning("job %s %s failed: %s", job.id, job.func, message, extra=extra)

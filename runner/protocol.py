"""Atomic Redis transitions of a job's life; no policy.

Every change that touches more than one key is a Lua script in ``runner/lua``
(the key schema is documented in :mod:`sigrun.runner.keys` and at the top of
each script).  This module only moves jobs; what *should* happen to a job was
decided by :mod:`sigrun.runner.policy` before a call gets here.

It is used by the runner, by the reaper and by the operator, all of them
asyncio programs.  The synchronous client API lives in :mod:`sigrun.runner.client`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from sigrun.runner.jobs import JSON, Job, Outcome, Record, RunnerIdentity, Verdict, now
from sigrun.runner.keys import Keys
from sigrun.runner.policy import Decision
from sigrun.runner.redisio import AsyncRedis, Script, run_pipelined

_RESERVE = Script("reserve")
_FINISH = Script("finish")
_PROMOTE = Script("promote")
_REQUEUE = Script("requeue")
_FORGET_RUNNER = Script("forget_runner")
_STARTED = Script("started")


@dataclass(frozen=True)
class Retention:
    """How long finished data stays in Redis, so it cannot grow without bound."""

    job_ttl_seconds: int = 24 * 3600  # a finished job's hash (state, result, last record)
    history_max: int = 10_000  # failed and dirty attempt records per queue (approximate cap)


class Store:
    """Job transitions on one Redis, for one key prefix."""

    def __init__(
        self, redis: AsyncRedis, keys: Keys | None = None, retention: Retention | None = None
    ) -> None:
        self.redis = redis
        self.keys = keys or Keys()
        self.retention = retention or Retention()

    # -- taking jobs ---------------------------------------------------------

    async def reserve(self, queue: str, runner_id: str, now: float) -> str | None:
        """Take the oldest pending job into ``runner_id``'s in-flight list, if there is one."""
        q = self.keys.queue(queue)
        payload = await _RESERVE.run(
            self.redis, [q.pending, q.inflight(runner_id), q.base], [runner_id, now]
        )
        return payload if isinstance(payload, str) else None

    async def wait_reserve(self, queue: str, runner_id: str, timeout: float) -> str | None:
        """Block up to ``timeout`` seconds for a job; the idle runner's path (BLMOVE)."""
        q = self.keys.queue(queue)
        return await self.redis.blmove(q.pending, q.inflight(runner_id), timeout, "RIGHT", "LEFT")

    async def mark_running(self, job: Job, runner_id: str, now: float) -> None:
        """The "running" write that :meth:`reserve` does inside its script."""
        key = self.keys.queue(job.queue).job(job.id)
        await _STARTED.run(self.redis, [key], [runner_id, now, job.attempt])

    async def requeue(self, queue: str, runner_id: str, payload: str, job_id: str) -> bool:
        """Give back a job that was taken but never started; no attempt is spent."""
        q = self.keys.queue(queue)
        done = await _REQUEUE.run(
            self.redis, [q.inflight(runner_id), q.base], [payload, job_id, now()]
        )
        return bool(done)

    # -- ending jobs ---------------------------------------------------------

    async def finish(
        self,
        *,
        queue: str,
        runner_id: str,
        held_payload: str,
        job_id: str,
        verdict: Verdict,
        decision: Decision,
        record: Record | None,
        result: JSON,
        now: float,
    ) -> bool:
        """Write one attempt's outcome; False when someone else already recorded it."""
        keys, args = self._finish_call(
            queue=queue,
            runner_id=runner_id,
            held_payload=held_payload,
            job_id=job_id,
            verdict=verdict,
            decision=decision,
            record=record,
            result=result,
            now=now,
        )
        return bool(await _FINISH.run(self.redis, keys, args))

    async def finish_and_reserve(
        self,
        *,
        queue: str,
        runner_id: str,
        held_payload: str,
        job_id: str,
        verdict: Verdict,
        decision: Decision,
        record: Record | None,
        result: JSON,
        now: float,
        reserve_from: str,
    ) -> tuple[bool, str | None]:
        """:meth:`finish`, then :meth:`reserve` from ``reserve_from``, in one round trip.

        The busy runner's hot path: one exchange with Redis per job.
        """
        finish_keys, finish_args = self._finish_call(
            queue=queue,
            runner_id=runner_id,
            held_payload=held_payload,
            job_id=job_id,
            verdict=verdict,
            decision=decision,
            record=record,
            result=result,
            now=now,
        )
        r = self.keys.queue(reserve_from)
        done, payload = await run_pipelined(
            self.redis,
            [
                (_FINISH, finish_keys, finish_args),
                (_RESERVE, [r.pending, r.inflight(runner_id), r.base], [runner_id, now]),
            ],
        )
        return bool(done), payload if isinstance(payload, str) else None

    def _finish_call(
        self,
        *,
        queue: str,
        runner_id: str,
        held_payload: str,
        job_id: str,
        verdict: Verdict,
        decision: Decision,
        record: Record | None,
        result: JSON,
        now: float,
    ) -> tuple[list[str], list[str | int | float]]:
        q = self.keys.queue(queue)
        next_payload = decision.next_job.to_json() if decision.next_job else ""
        result_json = (
            json.dumps(result, default=repr) if verdict.outcome is Outcome.SUCCEEDED else ""
        )
        return (
            [q.inflight(runner_id), q.base],
            [
                held_payload,
                job_id,
                verdict.outcome.value,
                decision.state.value,
                record.to_json() if record else "",
                next_payload,
                decision.due if decision.due is not None else "",
                now,
                result_json if result is not None else "",
                self.retention.job_ttl_seconds,
                self.retention.history_max,
                verdict.cause.value if verdict.cause else "",
                "1" if decision.front else "0",
            ],
        )

    async def promote(self, queue: str, now: float, limit: int = 100) -> int:
        """Move due retries back to the queue."""
        q = self.keys.queue(queue)
        return int(await _PROMOTE.run(self.redis, [q.delayed, q.base], [now, limit]))

    # -- runners -------------------------------------------------------------

    async def register(self, identity: RunnerIdentity, queues: Iterable[str]) -> None:
        """Enter the runner in each queue's index before it takes any job from it."""
        pipe = self.redis.pipeline(transaction=False)
        body = json.dumps(asdict(identity), separators=(",", ":"))
        for queue in queues:
            pipe.sadd(self.keys.queues, queue)
            pipe.hset(self.keys.queue(queue).runners, mapping={identity.runner_id: body})
        await pipe.execute()

    async def heartbeat(
        self,
        identity: RunnerIdentity,
        *,
        queues: Iterable[str],
        job_ids: Iterable[str],
        rss: Mapping[str, int] | None = None,
        concurrency: int,
        started_at: float,
        now: float,
        ttl_seconds: int,
    ) -> None:
        """Say "still alive" until ``now + ttl``; the reaper treats silence as death."""
        key = self.keys.runner(identity.runner_id)
        fields: dict[str, str | int | float] = {
            "queues": ",".join(queues),
            "jobs": ",".join(job_ids),
            # Each child's resident memory now: after a whole-container OOM kill, the
            # operator names the biggest as the likely culprit and spares the others.
            "rss": json.dumps(dict(rss or {}), separators=(",", ":")),
            "concurrency": concurrency,
            "started_at": started_at,
            "seen_at": now,
        }
        fields.update({k: v for k, v in asdict(identity).items() if v is not None})
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, ttl_seconds)
        await pipe.execute()

    async def deregister(self, runner_id: str, queues: Iterable[str]) -> None:
        """A clean exit: drop the heartbeat and every index entry that holds no job."""
        for queue in queues:
            await self.forget_runner(queue, runner_id)
        await self.redis.delete(self.keys.runner(runner_id))

    async def forget_runner(self, queue: str, runner_id: str) -> bool:
        q = self.keys.queue(queue)
        return bool(
            await _FORGET_RUNNER.run(self.redis, [q.inflight(runner_id), q.runners], [runner_id])
        )

    async def runners_of(self, queue: str) -> Mapping[str, RunnerIdentity]:
        raw = await self.redis.hgetall(self.keys.queue(queue).runners)
        return {rid: RunnerIdentity(**json.loads(body)) for rid, body in raw.items()}

    async def alive(self, runner_ids: Iterable[str]) -> set[str]:
        ids = list(runner_ids)
        if not ids:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for rid in ids:
            pipe.exists(self.keys.runner(rid))
        flags = await pipe.execute()
        return {rid for rid, flag in zip(ids, flags, strict=True) if flag}

    async def inflight(self, queue: str, runner_id: str) -> list[str]:
        return await self.redis.lrange(self.keys.queue(queue).inflight(runner_id), 0, -1)

    async def next_due(self, queues: Iterable[str]) -> float | None:
        """When the earliest waiting retry of these queues falls due (None: none waits)."""
        dues = []
        for queue in queues:
            first = await self.redis.zrange(self.keys.queue(queue).delayed, 0, 0, withscores=True)
            dues += [score for _, score in first]
        return min(dues, default=None)

    async def queues(self) -> set[str]:
        return await self.redis.smembers(self.keys.queues)

    async def runner_state(self, runner_id: str) -> dict[str, str]:
        """A runner's last heartbeat (empty once it expired)."""
        return await self.redis.hgetall(self.keys.runner(runner_id))

    async def depth(self, queue: str) -> QueueDepth:
        """What the operator scales on and reports: pending, in flight, and the counters."""
        q = self.keys.queue(queue)
        runners = await self.redis.hgetall(q.runners)
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(q.pending)
        pipe.hgetall(q.stats)
        for runner_id in runners:
            pipe.llen(q.inflight(runner_id))
        pending, stats, *inflight = await pipe.execute()
        return QueueDepth(
            pending=int(pending),
            inflight={rid: int(n) for rid, n in zip(runners, inflight, strict=True)},
            processed=int(stats.get("processed", 0)),
            failed=int(stats.get("failed", 0)),
            dirty=int(stats.get("dirty", 0)),
        )


@dataclass(frozen=True)
class QueueDepth:
    pending: int
    inflight: Mapping[str, int]  # runner id -> jobs it holds
    processed: int
    failed: int
    dirty: int

    @property
    def running(self) -> int:
        return sum(self.inflight.values())

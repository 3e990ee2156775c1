"""The Redis protocol on a real redis-server: enqueue, reliable fetch, exactly-once outcomes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis as raw_redis

from sigrun.runner import client
from sigrun.runner.errors import PayloadError
from sigrun.runner.jobs import Cause, Job, Outcome, RunnerIdentity, State, Verdict
from sigrun.runner.keys import Keys
from sigrun.runner.policy import Backoff, decide
from sigrun.runner.protocol import Store
from sigrun.runner.reaper import reap
from sigrun.runner.records import record_for
from sigrun.runner.redisio import SyncRedis, connect_async

T = TypeVar("T")
Q = "q1"
RUNNER = RunnerIdentity(runner_id="r1", hostname="host", pid=1)


def with_store(url: str, body: Callable[[Store], Awaitable[T]]) -> T:
    async def run() -> T:
        redis = connect_async(url)
        try:
            return await body(Store(redis))
        finally:
            await redis.aclose()

    return asyncio.run(run())


def test_enqueue_then_reserve_is_fifo_and_marks_the_job_running(
    redis: SyncRedis, raw: raw_redis.Redis, redis_url: str
) -> None:
    first = client.enqueue(redis, Q, "tests.redis.jobs:add", 1, 2)
    second = client.enqueue(redis, Q, "tests.redis.jobs:add", 3, 4)

    async def body(store: Store) -> list[str | None]:
        return [await store.reserve(Q, "r1", 100.0) for _ in range(3)]

    taken = with_store(redis_url, body)
    assert [Job.from_json(p, queue=Q).id for p in taken[:2] if p] == [first, second]
    assert taken[2] is None
    assert raw.llen(Keys().queue(Q).inflight("r1")) == 2
    assert raw.hget(Keys().queue(Q).job(first), "state") == "running"
    assert raw.hget(Keys().queue(Q).job(first), "runner") == "r1"


def test_enqueue_with_a_live_job_id_is_idempotent(redis: SyncRedis, raw: raw_redis.Redis) -> None:
    client.enqueue(redis, Q, "tests.redis.jobs:add", 1, 2, job_id="import-2026-01-01")
    client.enqueue(redis, Q, "tests.redis.jobs:add", 1, 2, job_id="import-2026-01-01")
    assert raw.llen(Keys().queue(Q).pending) == 1


def test_payloads_are_json_and_non_json_arguments_are_refused(
    redis: SyncRedis, raw: raw_redis.Redis
) -> None:
    with pytest.raises(PayloadError, match="JSON"):
        client.enqueue(redis, Q, "tests.redis.jobs:add", {1, 2})  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match=r"package\.module:function"):
        client.enqueue(redis, Q, "no_colon_here")
    client.enqueue(redis, Q, "tests.redis.jobs:add", 1, 2)
    payload = raw.lindex(Keys().queue(Q).pending, 0)
    assert isinstance(payload, str)
    assert json.loads(payload)["args"] == [1, 2]


def test_every_per_queue_key_is_hash_tagged_for_redis_cluster(
    redis: SyncRedis, raw: raw_redis.Redis, redis_url: str
) -> None:
    job_id = client.enqueue(redis, Q, "tests.redis.jobs:boom", "x", max_attempts=1)

    async def body(store: Store) -> None:
        await store.register(RUNNER, [Q])
        payload = await store.reserve(Q, "r1", 1.0)
        assert payload
        job = Job.from_json(payload, queue=Q)
        verdict = Verdict(Outcome.FAILED, Cause.EXCEPTION, "ValueError: x")
        decision = decide(job, verdict, now=2.0, backoff=Backoff())
        record = record_for(job, verdict, decision, identity=RUNNER, now=2.0)
        await store.finish(
            queue=Q,
            runner_id="r1",
            held_payload=payload,
            job_id=job_id,
            verdict=verdict,
            decision=decision,
            record=record,
            result=None,
            now=2.0,
        )

    with_store(redis_url, body)
    per_queue = [k for k in raw.keys("*") if k != "sigrun:queues"]
    assert per_queue, "the run wrote per-queue keys"
    assert all(k.startswith(f"sigrun:{{{Q}}}:") for k in per_queue), per_queue


def test_finish_records_an_outcome_exactly_once(
    redis: SyncRedis, raw: raw_redis.Redis, redis_url: str
) -> None:
    client.enqueue(redis, Q, "tests.redis.jobs:add", 1, 2, max_attempts=1)

    async def body(store: Store) -> list[bool]:
        payload = await store.reserve(Q, "r1", 1.0)
        assert payload
        job = Job.from_json(payload, queue=Q)
        verdict = Verdict(Outcome.DIRTY, Cause.OOM_KILLED, "pid 1 SIGKILL (signal 9): OOMKilled")
        decision = decide(job, verdict, now=2.0, backoff=Backoff())
        record = record_for(job, verdict, decision, identity=RUNNER, now=2.0)

        async def finish() -> bool:
            return await store.finish(
                queue=Q,
                runner_id="r1",
                held_payload=payload,
                job_id=job.id,
                verdict=verdict,
                decision=decision,
                record=record,
                result=None,
                now=2.0,
            )

        return list(await asyncio.gather(finish(), finish(), finish()))

    assert sorted(with_store(redis_url, body)) == [False, False, True]
    assert raw.xlen(Keys().queue(Q).history) == 1
    assert raw.hget(Keys().queue(Q).stats, "dirty") == "1"


def test_retry_waits_in_the_delayed_set_until_its_backoff_passes(
    redis: SyncRedis, raw: raw_redis.Redis, redis_url: str
) -> None:
    client.enqueue(redis, Q, "tests.redis.jobs:boom", "x", max_attempts=3)
    keys = Keys().queue(Q)

    async def body(store: Store) -> tuple[int, int]:
        payload = await store.reserve(Q, "r1", 100.0)
        assert payload
        job = Job.from_json(payload, queue=Q)
        verdict = Verdict(Outcome.FAILED, Cause.EXCEPTION, "ValueError: x")
        decision = decide(job, verdict, now=100.0, backoff=Backoff(base_seconds=10))
        assert decision.state is State.RETRYING and decision.due == 110.0
        await store.finish(
            queue=Q,
            runner_id="r1",
            held_payload=payload,
            job_id=job.id,
            verdict=verdict,
            decision=decision,
            record=record_for(job, verdict, decision, identity=RUNNER, now=100.0),
            result=None,
            now=100.0,
        )
        return await store.promote(Q, 105.0), await store.promote(Q, 110.0)

    assert with_store(redis_url, body) == (0, 1)
    payload = raw.lindex(keys.pending, 0)
    assert payload and Job.from_json(payload, queue=Q).attempt == 2


def test_racing_reapers_record_a_lost_runners_job_once(
    redis: SyncRedis, raw: raw_redis.Redis, redis_url: str
) -> None:
    job_id = client.enqueue(redis, Q, "tests.redis.jobs:sleep", 60, max_attempts=2)

    async def body(store: Store) -> list[int]:
        await store.register(RUNNER, [Q])
        assert await store.reserve(Q, "r1", 1.0)
        # r1 never sent a heartbeat: it is as good as dead.
        results = await asyncio.gather(
            *(reap(store, backoff=Backoff(0), now=5.0) for _ in range(4))
        )
        return [len(r) for r in results]

    assert sorted(with_store(redis_url, body)) == [0, 0, 0, 1]
    history = client.history(redis, Q)
    assert [(r.job_id, r.cause, r.outcome) for r in history] == [
        (job_id, Cause.RUNNER_LOST, Outcome.DIRTY)
    ]
    assert "r1" in history[0].message
    assert raw.hget(Keys().queue(Q).job(job_id), "state") == "queued", "no backoff: straight back"
    assert raw.llen(Keys().queue(Q).pending) == 1
    assert raw.hlen(Keys().queue(Q).runners) == 0, "a reaped runner leaves the index"


def test_reaper_leaves_live_runners_alone(redis: SyncRedis, redis_url: str) -> None:
    client.enqueue(redis, Q, "tests.redis.jobs:sleep", 60)

    async def body(store: Store) -> int:
        await store.register(RUNNER, [Q])
        await store.heartbeat(
            RUNNER, queues=[Q], job_ids=[], concurrency=1, started_at=0.0, now=1.0, ttl_seconds=30
        )
        assert await store.reserve(Q, "r1", 1.0)
        return len(await reap(store, backoff=Backoff(), now=2.0))

    assert with_store(redis_url, body) == 0

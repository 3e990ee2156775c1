"""The busy runner's hot path: one round trip records a job's outcome and takes the next."""

from __future__ import annotations

import asyncio
import json

import redis as raw_redis

from sigrun.runner import client
from sigrun.runner.jobs import Outcome, State, Verdict
from sigrun.runner.keys import Keys
from sigrun.runner.policy import Decision
from sigrun.runner.protocol import Store
from sigrun.runner.redisio import SyncRedis, connect_async

Q = "hot"


def finish_first_take_next(
    url: str, *, flush_scripts: raw_redis.Redis | None = None
) -> tuple[bool, str | None]:
    async def body() -> tuple[bool, str | None]:
        redis = connect_async(url)
        try:
            store = Store(redis)
            payload = await store.reserve(Q, "r1", 1.0)
            assert payload is not None
            if flush_scripts is not None:  # as after a Redis restart: no script is cached
                flush_scripts.script_flush()
            return await store.finish_and_reserve(
                queue=Q,
                runner_id="r1",
                held_payload=payload,
                job_id=json.loads(payload)["id"],
                verdict=Verdict(Outcome.SUCCEEDED),
                decision=Decision(State.SUCCEEDED),
                record=None,
                result=42,
                now=2.0,
                reserve_from=Q,
            )
        finally:
            await redis.aclose()

    return asyncio.run(body())


def test_the_outcome_is_written_and_the_next_job_taken(
    redis: SyncRedis, raw: raw_redis.Redis, redis_url: str
) -> None:
    first = client.enqueue(redis, Q, "tests.redis.jobs:add", 40, 2)
    second = client.enqueue(redis, Q, "tests.redis.jobs:add", 1, 1)
    written, following = finish_first_take_next(redis_url)
    assert written and following is not None and json.loads(following)["id"] == second
    keys = Keys().queue(Q)
    assert raw.hget(keys.job(first), "state") == "succeeded"
    assert json.loads(raw.hget(keys.job(first), "result") or "null") == 42
    assert raw.hget(keys.job(second), "state") == "running"
    assert raw.lrange(keys.inflight("r1"), 0, -1) == [following]


def test_an_empty_queue_gives_no_next_job(redis: SyncRedis, redis_url: str) -> None:
    client.enqueue(redis, Q, "tests.redis.jobs:add", 40, 2)
    assert finish_first_take_next(redis_url) == (True, None)


def test_scripts_missing_from_the_cache_are_sent_again(
    redis: SyncRedis, raw: raw_redis.Redis, redis_url: str
) -> None:
    client.enqueue(redis, Q, "tests.redis.jobs:add", 40, 2)
    second = client.enqueue(redis, Q, "tests.redis.jobs:add", 1, 1)
    written, following = finish_first_take_next(redis_url, flush_scripts=raw)
    assert written and following is not None and json.loads(following)["id"] == second
    assert raw.hget(Keys().queue(Q).stats, "processed") == "1"

"""The runner end to end: the real ``sigrun`` CLI, a real redis-server, real forks and signals."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis as raw_redis

from sigrun.runner import client
from sigrun.runner.jobs import Cause, Outcome
from sigrun.runner.keys import Keys
from sigrun.runner.redisio import SyncRedis, connect
from sigrun.runner.redisserver import RedisServer
from tests.conftest import run_sigrun, start_sigrun

Q = "work"
ALLOW = ("--allow-module", "tests.redis.jobs")


def work_burst(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_sigrun(
        "work", "--redis", url, "--queue", Q, "--burst", *ALLOW, "--backoff", "0", *extra
    )


def state(raw: raw_redis.Redis, job_id: str) -> dict[str, str]:
    return raw.hgetall(Keys().queue(Q).job(job_id))  # type: ignore[return-value]


@contextlib.contextmanager
def running_runner(url: str, log: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """A long-running ``sigrun work`` on the test queue, killed if the test leaves it up."""
    runner = start_sigrun("work", "--redis", url, "--queue", Q, *ALLOW, *extra, log=log)
    try:
        yield runner
    finally:
        runner.kill()
        runner.wait()


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_burst_runs_jobs_and_keeps_results(
    redis: SyncRedis, raw: raw_redis.Redis, redis_url: str
) -> None:
    ids = [client.enqueue(redis, Q, "tests.redis.jobs:add", i, 1) for i in range(5)]
    work_burst(redis_url, "--concurrency", "2")
    assert [json.loads(state(raw, i)["result"]) for i in ids] == [1, 2, 3, 4, 5]
    assert {state(raw, i)["state"] for i in ids} == {"succeeded"}
    info = json.loads(run_sigrun("info", "--redis", redis_url, "--json").stdout)
    assert (info["processed"], info["failed"], info["dirty"], info["pending"]) == (5, 0, 0, 0)


def test_exception_is_recorded_with_type_message_and_traceback(
    redis: SyncRedis, redis_url: str
) -> None:
    job_id = client.enqueue(redis, Q, "tests.redis.jobs:boom", "the disk is full", max_attempts=1)
    work_burst(redis_url)
    [record] = client.failed(redis, queue=Q)
    assert (record.job_id, record.outcome, record.cause) == (
        job_id,
        Outcome.FAILED,
        Cause.EXCEPTION,
    )
    assert record.exc_type.endswith("ValueError") and record.exc_message == "the disk is full"
    assert "raise ValueError(message)" in record.traceback
    assert record.runner_id and record.hostname and record.pid


def test_sigkilled_child_is_a_dirty_exit_with_its_last_words(
    redis: SyncRedis, redis_url: str
) -> None:
    client.enqueue(redis, Q, "tests.redis.jobs:kill_self", "SIGKILL", max_attempts=1)
    work_burst(redis_url)
    [record] = client.failed(redis, queue=Q)
    assert (record.outcome, record.cause, record.signal, record.signal_name) == (
        Outcome.DIRTY,
        Cause.SIGNAL,
        9,
        "SIGKILL",
    )
    assert record.message.startswith(f"pid {record.pid} SIGKILL (signal 9): Signal")
    assert "about to die" in record.last_words


def test_a_job_that_always_dies_dirty_gives_up_after_max_attempts(
    redis: SyncRedis, raw: raw_redis.Redis, redis_url: str
) -> None:
    job_id = client.enqueue(redis, Q, "tests.redis.jobs:kill_self", "SIGSEGV", max_attempts=3)
    work_burst(redis_url)
    assert state(raw, job_id)["state"] == "dirty"
    history = client.history(redis, Q)
    assert [r.attempt for r in history] == [3, 2, 1]
    assert all(r.cause is Cause.CRASH for r in history)
    assert "gave up after 3 dirty exits (Crash)" in history[0].message
    assert "retrying" in history[1].message


def test_failing_job_is_retried_with_backoff_until_it_succeeds(
    redis: SyncRedis, raw: raw_redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    counter = tmp_path / "attempts"
    job_id = client.enqueue(
        redis, Q, "tests.redis.jobs:fail_until", str(counter), 3, max_attempts=3
    )
    work_burst(redis_url)
    assert state(raw, job_id)["state"] == "succeeded"
    assert json.loads(state(raw, job_id)["result"]) == 3
    assert len(client.history(redis, Q)) == 2
    assert client.failed(redis, queue=Q) == []


@pytest.mark.parametrize("burst", [True, False])
def test_a_retry_runs_when_its_backoff_is_over_not_when_another_job_ends(
    redis: SyncRedis, redis_url: str, tmp_path: Path, burst: bool
) -> None:
    # Two slots: one busy with a long job, the other free for the retry when it falls due.
    busy, counter = tmp_path / "busy", tmp_path / "attempts"
    client.enqueue(redis, Q, "tests.redis.jobs:sleep", 6, str(busy))
    client.enqueue(redis, Q, "tests.redis.jobs:fail_until", str(counter), 2, max_attempts=2)
    extra = ["--burst"] if burst else []
    with running_runner(
        redis_url, tmp_path / "runner.log", "--concurrency", "2", "--backoff", "0.5", *extra
    ):
        wait_for(lambda: counter.exists() and counter.read_text() == "1", what="attempt 1")
        first = time.monotonic()
        wait_for(lambda: counter.read_text() == "2", timeout=5, what="attempt 2")
        assert time.monotonic() - first < 2.5  # 0.5s of backoff, not the 6s job's end


def test_malformed_payloads_are_failed_with_a_clear_cause_and_the_runner_keeps_going(
    redis: SyncRedis, raw: raw_redis.Redis, redis_url: str
) -> None:
    pending = Keys().queue(Q).pending
    raw.sadd(Keys().queues, Q)
    raw.lpush(pending, "this is not json")
    raw.lpush(pending, json.dumps({"id": "no-func"}))
    bad = {
        "unknown-module": "tests.redis.jobs.missing:run",
        "not-allowed": "os:system",
        "missing-attr": "tests.redis.jobs:nope",
    }
    for job_id, func in bad.items():
        raw.lpush(pending, json.dumps({"id": job_id, "func": func, "args": ["x"]}))
    wrong_args = client.enqueue(redis, Q, "tests.redis.jobs:add", 1, 2, 3)
    good = client.enqueue(redis, Q, "tests.redis.jobs:add", 40, 2)

    work_burst(redis_url)

    causes = {r.job_id: r.cause for r in client.failed(redis, queue=Q)}
    assert causes["no-func"] is Cause.BAD_PAYLOAD
    assert causes["unknown-module"] is Cause.FUNCTION_NOT_FOUND
    assert causes["missing-attr"] is Cause.FUNCTION_NOT_FOUND
    assert causes["not-allowed"] is Cause.FUNCTION_NOT_ALLOWED
    assert causes[wrong_args] is Cause.BAD_ARGUMENTS
    assert [c for j, c in causes.items() if j.startswith("bad-")] == [Cause.BAD_PAYLOAD]
    assert json.loads(state(raw, good)["result"]) == 42
    not_allowed = next(r for r in client.failed(redis, queue=Q) if r.job_id == "not-allowed")
    assert "os" in not_allowed.message and "allow" in not_allowed.message.lower()


def test_sigterm_lets_running_jobs_finish_within_the_grace_period(
    redis: SyncRedis, raw: raw_redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    job_id = client.enqueue(redis, Q, "tests.redis.jobs:sleep", 1.5, str(marker))
    with running_runner(redis_url, tmp_path / "runner.log", "--grace", "20") as runner:
        wait_for(marker.exists, what="the job to start")
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=20) == 0
    assert state(raw, job_id)["state"] == "succeeded"


def test_sigterm_after_the_grace_period_kills_and_requeues_without_spending_an_attempt(
    redis: SyncRedis, raw: raw_redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    markers = [tmp_path / "a", tmp_path / "b"]
    ids = [client.enqueue(redis, Q, "tests.redis.jobs:sleep", 120, str(m)) for m in markers]
    with running_runner(
        redis_url, tmp_path / "runner.log", "--concurrency", "2", "--grace", "1"
    ) as runner:
        wait_for(lambda: all(m.exists() for m in markers), what="both jobs to start")
        started = time.monotonic()
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=20) == 0
        assert time.monotonic() - started < 10
    pending = raw.lrange(Keys().queue(Q).pending, 0, -1)
    assert sorted(json.loads(p)["id"] for p in pending) == sorted(ids)
    assert all(json.loads(p)["attempt"] == 1 for p in pending)
    assert {state(raw, i)["state"] for i in ids} == {"queued"}
    history = client.history(redis, Q)
    assert {r.cause for r in history} == {Cause.SHUTDOWN}
    assert not [k for k in raw.keys("*inflight*") if raw.llen(k)], "nothing left in flight"


def test_a_second_sigterm_ends_the_grace_period_at_once(
    redis: SyncRedis, raw: raw_redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    job_id = client.enqueue(redis, Q, "tests.redis.jobs:sleep", 120, str(marker))
    with running_runner(redis_url, tmp_path / "runner.log", "--grace", "300") as runner:
        wait_for(marker.exists, what="the job to start")
        runner.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert runner.poll() is None, "the first SIGTERM waits for the job"
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=15) == 0
    assert state(raw, job_id)["state"] == "queued"


def test_a_runner_killed_outright_is_reaped_once_as_runner_lost(
    redis: SyncRedis, raw: raw_redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    job_id = client.enqueue(redis, Q, "tests.redis.jobs:sleep", 120, str(marker), max_attempts=2)
    runner = start_sigrun(
        "work",
        "--redis",
        redis_url,
        "--queue",
        Q,
        *ALLOW,
        "--heartbeat-ttl",
        "2",
        log=tmp_path / "runner.log",
    )
    wait_for(lambda: marker.exists() and marker.read_text() != "", what="the job to start")
    # As if the whole container were OOM-killed: the runner and its child die together.
    runner.kill()
    runner.wait()
    os.kill(int(marker.read_text()), signal.SIGKILL)
    time.sleep(2.5)  # the heartbeat expires
    reapers = [
        start_sigrun("reap", "--redis", redis_url, log=tmp_path / f"reap{i}.log") for i in range(3)
    ]
    assert [r.wait(timeout=30) for r in reapers] == [0, 0, 0]
    history = client.history(redis, Q)
    assert [(r.job_id, r.cause) for r in history] == [(job_id, Cause.RUNNER_LOST)]
    assert state(raw, job_id)["state"] == "retrying"


def test_redis_going_away_does_not_lose_the_outcome(redis: SyncRedis, tmp_path: Path) -> None:
    del redis  # this test has a Redis of its own, which it stops and starts again
    with RedisServer(persistent=True) as server:
        local = client_for(server.url)
        marker = tmp_path / "started"
        job_id = client.enqueue(local, Q, "tests.redis.jobs:sleep", 2, str(marker))
        runner = start_sigrun(
            "work", "--redis", server.url, "--queue", Q, *ALLOW, log=tmp_path / "runner.log"
        )
        try:
            wait_for(marker.exists, what="the job to start")
            server.stop()
            time.sleep(3.5)  # the job ends while Redis is away
            assert runner.poll() is None, "the runner survives Redis going away"
            server.start_again()
            local = client_for(server.url)
            wait_for(
                lambda: local.hget(Keys().queue(Q).job(job_id), "state") == "succeeded",
                what="the outcome to be written once Redis is back",
            )
        finally:
            runner.send_signal(signal.SIGTERM)
            runner.wait(timeout=20)
    assert "Redis unavailable" in (tmp_path / "runner.log").read_text()


def test_a_runner_that_never_reached_redis_stops_at_once_on_sigterm(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    log = tmp_path / "runner.log"
    runner = start_sigrun("work", "--redis", url, "--queue", Q, *ALLOW, log=log)
    try:
        wait_for(lambda: "cannot register" in log.read_text(), what="a failed registration")
        runner.send_signal(signal.SIGTERM)
        code = runner.wait(timeout=5)  # not after the next back-off, nor never
    finally:
        if runner.poll() is None:
            runner.kill()
    assert code == 4  # "cannot reach Redis"
    assert "cannot reach Redis" in log.read_text()


def test_a_runner_stopping_while_redis_is_away_gives_up_after_its_grace_and_loses_nothing(
    redis: SyncRedis, tmp_path: Path
) -> None:
    del redis  # this test has a Redis of its own, which it stops and starts again
    with RedisServer(persistent=True) as server:
        marker = tmp_path / "started"
        job_id = client.enqueue(client_for(server.url), Q, "tests.redis.jobs:sleep", 1, str(marker))
        log = tmp_path / "runner.log"
        runner = start_sigrun(
            "work", "--redis", server.url, "--queue", Q, *ALLOW,
            "--grace", "3", "--heartbeat-ttl", "2", log=log,
        )  # fmt: skip
        try:
            wait_for(marker.exists, what="the job to start")
            server.stop()
            runner.send_signal(signal.SIGTERM)
            code = runner.wait(timeout=3 + 5)  # the grace period, and not forever
        finally:
            if runner.poll() is None:
                runner.kill()
        assert code == 4
        assert "stopping anyway" in log.read_text()
        # The outcome could not be written; the job is still held, so once the runner's
        # heartbeat has expired a reaper records it and it runs again.
        server.start_again()
        time.sleep(2.5)
        run_sigrun("reap", "--redis", server.url)
        local = client_for(server.url)
        [record] = client.history(local, Q)
        assert (record.job_id, record.cause) == (job_id, Cause.RUNNER_LOST)
        raw = raw_redis.Redis.from_url(server.url, decode_responses=True)
        assert state(raw, job_id)["state"] == "retrying"


def client_for(url: str) -> SyncRedis:
    return connect(url)


def test_burst_waits_for_retries_in_backoff_instead_of_leaving_them_behind(
    redis: SyncRedis, raw: raw_redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    counter = tmp_path / "attempts"
    job_id = client.enqueue(redis, Q, "tests.redis.jobs:fail_until", str(counter), 2)
    run_sigrun("work", "--redis", redis_url, "--queue", Q, "--burst", *ALLOW, "--backoff", "0.5")
    assert state(raw, job_id)["state"] == "succeeded"
    assert raw.zcard(Keys().queue(Q).delayed) == 0

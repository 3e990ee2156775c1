"""The ``sigrun`` commands a Resque or RQ user reaches for: enqueue, info, failed, retry."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import redis as raw_redis

from sigrun.runner import client
from sigrun.runner.keys import Keys
from sigrun.runner.redisio import SyncRedis
from tests.conftest import run_sigrun, sigrun_command

Q = "cli"


def test_enqueue_takes_json_arguments_and_plain_strings(
    raw: raw_redis.Redis, redis_url: str
) -> None:
    out = run_sigrun(
        "enqueue",
        "--redis",
        redis_url,
        Q,
        "tests.redis.jobs:add",
        "1",
        "2",
        "--kwarg",
        'note="x"',
        "--timeout",
        "30",
        "--max-attempts",
        "5",
    ).stdout
    job_id = out.strip()
    payload = json.loads(raw.lindex(Keys().queue(Q).pending, 0) or "{}")
    assert payload["id"] == job_id
    assert (payload["args"], payload["kwargs"]) == ([1, 2], {"note": "x"})
    assert (payload["timeout"], payload["max_attempts"]) == (30, 5)
    run_sigrun("enqueue", "--redis", redis_url, Q, "tests.redis.jobs:add", "2026-01-01")
    payload = json.loads(raw.lindex(Keys().queue(Q).pending, 0) or "{}")
    assert payload["args"] == ["2026-01-01"]


def test_enqueue_with_the_same_job_id_says_it_is_already_queued(
    raw: raw_redis.Redis, redis_url: str
) -> None:
    args = (
        "enqueue",
        "--redis",
        redis_url,
        Q,
        "tests.redis.jobs:add",
        "1",
        "2",
        "--job-id",
        "day-1",
    )
    assert run_sigrun(*args).stdout.strip() == "day-1"
    assert "already queued" in run_sigrun(*args).stdout
    assert raw.llen(Keys().queue(Q).pending) == 1


def test_bad_enqueue_is_refused_with_a_clear_message(redis_url: str) -> None:
    done = run_sigrun("enqueue", "--redis", redis_url, Q, "not_a_function_path", check=False)
    assert done.returncode == 3
    assert "package.module:function" in done.stderr


def test_an_argument_that_starts_like_json_but_is_not_is_refused(
    raw: raw_redis.Redis, redis_url: str
) -> None:
    for bad in ("--kwarg=start={bad", "[1, 2"):
        done = run_sigrun(
            "enqueue", "--redis", redis_url, Q, "tests.redis.jobs:add", bad, check=False
        )
        assert done.returncode == 3, done.stderr
        assert "looks like JSON but is not" in done.stderr
    assert raw.llen(Keys().queue(Q).pending) == 0  # nothing half-made was enqueued


def test_an_unknown_cause_lists_the_known_ones(redis_url: str) -> None:
    done = run_sigrun("failed", "--redis", redis_url, "--cause", "Bogus", check=False)
    assert done.returncode == 2
    assert "'Bogus' is not a cause" in done.stderr and "OOMKilled" in done.stderr


def test_unreachable_redis_is_a_clear_error_without_the_password() -> None:
    done = run_sigrun("info", "--redis", "redis://:hunter2@127.0.0.1:1/0", check=False)
    assert done.returncode == 4
    assert "cannot reach Redis" in done.stderr and "hunter2" not in done.stderr


def test_info_shows_the_fields_a_resque_user_knows(redis: SyncRedis, redis_url: str) -> None:
    client.enqueue(redis, Q, "tests.redis.jobs:add", 1, 2)
    client.enqueue(redis, Q, "tests.redis.jobs:boom", "no", max_attempts=1)
    run_sigrun(
        "work", "--redis", redis_url, "-q", Q, "--burst", "--allow-module", "tests.redis.jobs"
    )
    client.enqueue(redis, Q, "tests.redis.jobs:add", 3, 4)
    text = run_sigrun("info", "--redis", redis_url).stdout
    for field in ("pending", "running", "processed", "failed", "dirty", "workers", "working"):
        assert field in text
    # One job failed for good after one attempt: as an attempt, and as a job given up.
    assert re.search(r"^failed +1 +attempts", text, re.M)
    assert re.search(r"^given up +1 +jobs", text, re.M)
    info = json.loads(run_sigrun("info", "--redis", redis_url, "--json").stdout)
    assert (info["pending"], info["processed"], info["failed"], info["workers"]) == (1, 2, 1, 0)
    assert [q["name"] for q in info["queues"]] == [Q]


def test_failed_lists_dead_jobs_by_cause_and_retry_brings_them_back(
    redis: SyncRedis, raw: raw_redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    counter = tmp_path / "n"
    flaky = client.enqueue(redis, Q, "tests.redis.jobs:fail_until", str(counter), 2, max_attempts=1)
    killed = client.enqueue(redis, Q, "tests.redis.jobs:kill_self", "SIGKILL", max_attempts=1)
    run_sigrun(
        "work", "--redis", redis_url, "-q", Q, "--burst", "--allow-module", "tests.redis.jobs"
    )

    table = run_sigrun("failed", "--redis", redis_url).stdout
    assert "Exception" in table and "Signal" in table and "SIGKILL (signal 9)" in table
    only_signal = json.loads(
        run_sigrun("failed", "--redis", redis_url, "--cause", "Signal", "--json").stdout
    )
    assert [r["job_id"] for r in only_signal] == [killed]
    assert only_signal[0]["signal_name"] == "SIGKILL"

    assert "requeued" in run_sigrun("retry", "--redis", redis_url, flaky).stdout
    assert raw.hget(Keys().queue(Q).job(flaky), "state") == "queued"
    run_sigrun(
        "work", "--redis", redis_url, "-q", Q, "--burst", "--allow-module", "tests.redis.jobs"
    )
    assert raw.hget(Keys().queue(Q).job(flaky), "state") == "succeeded"
    remaining = json.loads(run_sigrun("failed", "--redis", redis_url, "--json").stdout)
    assert [r["job_id"] for r in remaining] == [killed]
    assert run_sigrun("retry", "--redis", redis_url, flaky, check=False).returncode == 1


def test_work_reads_its_configuration_from_the_environment(
    redis: SyncRedis, raw: raw_redis.Redis, redis_url: str
) -> None:
    job_id = client.enqueue(redis, Q, "tests.redis.jobs:add", 20, 22)
    env = {
        **os.environ,
        "SIGRUN_REDIS_URL": redis_url,
        "SIGRUN_QUEUES": f"other,{Q}",
        "SIGRUN_ALLOW_MODULES": "tests.redis.jobs",
        "SIGRUN_BURST": "true",
        "SIGRUN_CONCURRENCY": "2",
    }
    subprocess.run(sigrun_command("work"), env=env, check=True, timeout=60, capture_output=True)
    assert raw.hget(Keys().queue(Q).job(job_id), "result") == "42"


def test_work_without_an_allow_list_refuses_to_start(redis_url: str) -> None:
    done = run_sigrun("work", "--redis", redis_url, "-q", Q, "--burst", check=False)
    assert done.returncode == 3
    assert "--allow-module" in done.stderr

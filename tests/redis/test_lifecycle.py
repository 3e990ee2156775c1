"""A job's whole life across deaths: its timeline, and that it is always in exactly one place."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import redis as raw_redis

from sigrun.runner import client
from sigrun.runner.jobs import Cause
from sigrun.runner.keys import Keys
from sigrun.runner.redisio import SyncRedis
from tests.conftest import run_sigrun, start_sigrun

Q = "life"
ALLOW = ("--allow-module", "tests.redis.jobs")

# Where is the job right now?  Read in one atomic step, as a script, so a sample
# can never fall between two halves of a transition.
_WHERE = """
local places = {}
for _, payload in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if string.find(payload, ARGV[1], 1, true) then table.insert(places, 'pending') end
end
for _, payload in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if string.find(payload, ARGV[1], 1, true) then table.insert(places, 'delayed') end
end
for _, runner in ipairs(redis.call('HKEYS', KEYS[3])) do
  for _, payload in ipairs(redis.call('LRANGE', KEYS[4] .. runner, 0, -1)) do
    if string.find(payload, ARGV[1], 1, true) then table.insert(places, 'inflight') end
  end
end
local state = redis.call('HGET', KEYS[5], 'state')
if state == 'succeeded' or state == 'failed' or state == 'dirty' then
  table.insert(places, state)
end
return places
"""


def test_a_job_killed_once_then_succeeding_has_the_whole_story_in_its_timeline(
    redis: SyncRedis, redis_url: str, tmp_path: Path
) -> None:
    job_id = client.enqueue(redis, Q, "tests.redis.jobs:die_first", str(tmp_path / "n"))
    run_sigrun("work", "--redis", redis_url, "-q", Q, "--burst", "--backoff", "0", *ALLOW)
    states = [state for state, _ in client.timeline(redis, Q, job_id)]
    assert states == ["queued", "running", "dirty", "queued", "running", "succeeded"]
    [record] = client.history(redis, Q)
    assert (record.job_id, record.cause, record.attempt) == (job_id, Cause.SIGNAL, 1)
    shown = run_sigrun("job", "--redis", redis_url, job_id).stdout
    assert "succeeded (attempt 2)" in shown and "dirty" in shown


def test_a_runner_killed_mid_job_is_reaped_by_another_runner_that_runs_the_job_again(
    redis: SyncRedis, raw: raw_redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "first-attempt"
    job_id = client.enqueue(
        redis, Q, "tests.redis.jobs:sleep_first", str(tmp_path / "n"), 300, str(marker)
    )
    keys = Keys().queue(Q)
    where = raw.register_script(_WHERE)
    samples: list[list[str]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            places = where(
                keys=[
                    keys.pending,
                    keys.delayed,
                    keys.runners,
                    keys.base + "inflight:",
                    keys.job(job_id),
                ],
                args=[job_id],
            )
            samples.append(places)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    ttl, reap_every = 2, 1
    common = (
        "--redis",
        redis_url,
        "-q",
        Q,
        *ALLOW,
        "--backoff",
        "0",
        "--heartbeat-ttl",
        str(ttl),
        "--reap-interval",
        str(reap_every),
    )
    first = start_sigrun("work", *common, log=tmp_path / "first.log")
    second = None
    try:
        deadline = time.monotonic() + 20
        while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        second = start_sigrun("work", *common, log=tmp_path / "second.log")
        # The first runner is killed outright; its child must not go on unwatched
        # (the job is about to run again elsewhere).
        child = int(marker.read_text())
        first.kill()
        first.wait()
        killed_at = time.monotonic()
        while _alive(child) and time.monotonic() < killed_at + 10:
            time.sleep(0.02)
        child_outlived_runner = _alive(child)
        while (
            raw.hget(keys.job(job_id), "state") != "succeeded" and time.monotonic() < killed_at + 30
        ):
            time.sleep(0.05)
        recovered_after = time.monotonic() - killed_at
    finally:
        stop.set()
        watcher.join()
        first.kill()
        if second is not None:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=20)

    assert not child_outlived_runner, "the killed runner's child is stopped, not left running"
    assert raw.hget(keys.job(job_id), "state") == "succeeded"
    assert recovered_after < ttl + reap_every + 5, recovered_after
    assert [(r.job_id, r.cause) for r in client.history(redis, Q)] == [(job_id, Cause.RUNNER_LOST)]
    states = [state for state, _ in client.timeline(redis, Q, job_id)]
    assert states == ["queued", "running", "dirty", "queued", "running", "succeeded"]
    assert samples and all(len(places) == 1 for places in samples), [
        p for p in samples if len(p) != 1
    ][:5]


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False

"""The synchronous client API: enqueue jobs, read queue stats and failures, retry by hand.

This is what application code and the ``sigrun`` CLI call; it needs only a
plain ``redis.Redis`` (or a URL).  The runner's own asyncio side is
:mod:`sigrun.runner.protocol`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from sigrun.runner.errors import PayloadError, SigrunError
from sigrun.runner.jobs import JSON, Cause, Job, Record, new_job_id, now
from sigrun.runner.keys import Keys
from sigrun.runner.redisio import Script, SyncRedis

_ENQUEUE = Script("enqueue")
_RETRY = Script("retry")


def enqueue(
    redis: SyncRedis,
    queue: str,
    func: str,
    *args: JSON,
    max_attempts: int = 3,
    timeout: float | None = None,
    job_id: str | None = None,
    keys: Keys | None = None,
    **kwargs: JSON,
) -> str:
    """Put ``func(*args, **kwargs)`` on ``queue``; return the job id.

    ``func`` is ``"package.module:function"``; the runner imports it only from
    its allowed modules.  Arguments must be JSON values.  With ``job_id``,
    enqueueing is idempotent: while a job with that id is queued, running or
    waiting for a retry, a second enqueue does nothing and returns the same id.
    """
    keys = keys or Keys()
    job = make_job(
        queue, func, args, kwargs, max_attempts=max_attempts, timeout=timeout, job_id=job_id
    )
    enqueue_job(redis, job, keys)
    return job.id


def make_job(
    queue: str,
    func: str,
    args: Iterable[JSON],
    kwargs: dict[str, JSON],
    *,
    max_attempts: int = 3,
    timeout: float | None = None,
    job_id: str | None = None,
) -> Job:
    """Validate the parts of a job before anything is written (fail at the caller, not later)."""
    if not queue or "{" in queue or "}" in queue:
        raise PayloadError(f"queue name {queue!r} must be non-empty and contain no braces")
    module, _, attr = func.partition(":")
    if not module or not attr:
        raise PayloadError(f"func must look like 'package.module:function', got {func!r}")
    if max_attempts < 1:
        raise PayloadError(f"max_attempts must be at least 1, got {max_attempts}")
    if timeout is not None and (not math.isfinite(timeout) or timeout <= 0):
        raise PayloadError(f"timeout must be a positive number of seconds, got {timeout}")
    job = Job(
        id=job_id or new_job_id(),
        queue=queue,
        func=func,
        args=tuple(args),
        kwargs=kwargs,
        max_attempts=max_attempts,
        timeout=timeout,
        enqueued_at=now(),
    )
    try:
        job.to_json()
    except (TypeError, ValueError) as e:
        raise PayloadError(f"job arguments must be JSON values: {e}") from e
    return job


def enqueue_job(redis: SyncRedis, job: Job, keys: Keys | None = None) -> bool:
    """Write a prepared job; False when a live job with the same id already exists."""
    keys = keys or Keys()
    q = keys.queue(job.queue)
    redis.sadd(keys.queues, job.queue)
    added = _ENQUEUE.run_sync(
        redis, [q.pending, q.job(job.id)], [job.to_json(), job.enqueued_at, job.func]
    )
    return bool(added)


@dataclass(frozen=True)
class QueueInfo:
    name: str
    pending: int
    running: int
    delayed: int
    processed: int
    succeeded: int
    failed: int
    dirty: int
    failed_jobs: int  # jobs whose final state is failed or dirty, awaiting a look or a retry


@dataclass(frozen=True)
class Info:
    """What ``Resque.info`` tells, per queue and in total."""

    pending: int
    running: int
    delayed: int
    processed: int
    failed: int
    dirty: int
    workers: int
    working: int
    queues: tuple[QueueInfo, ...] = field(default_factory=tuple)


def info(redis: SyncRedis, keys: Keys | None = None) -> Info:
    keys = keys or Keys()
    queues: list[QueueInfo] = []
    for name in sorted(redis.smembers(keys.queues)):
        q = keys.queue(name)
        stats = redis.hgetall(q.stats)
        running = sum(redis.llen(q.inflight(rid)) for rid in redis.hkeys(q.runners))
        queues.append(
            QueueInfo(
                name=name,
                pending=redis.llen(q.pending),
                running=running,
                delayed=redis.zcard(q.delayed),
                processed=int(stats.get("processed", 0)),
                succeeded=int(stats.get("succeeded", 0)),
                failed=int(stats.get("failed", 0)),
                dirty=int(stats.get("dirty", 0)),
                failed_jobs=redis.zcard(q.failed),
            )
        )
    workers = working = 0
    for key in redis.scan_iter(match=keys.runner_pattern, count=1000):
        workers += 1
        if redis.hget(key, "jobs"):
            working += 1
    return Info(
        pending=sum(q.pending for q in queues),
        running=sum(q.running for q in queues),
        delayed=sum(q.delayed for q in queues),
        processed=sum(q.processed for q in queues),
        failed=sum(q.failed for q in queues),
        dirty=sum(q.dirty for q in queues),
        workers=workers,
        working=working,
        queues=tuple(queues),
    )


def failed(
    redis: SyncRedis,
    *,
    queue: str | None = None,
    cause: Cause | None = None,
    limit: int = 100,
    keys: Keys | None = None,
) -> list[Record]:
    """Jobs whose final state is failed or dirty, newest first, with their last record."""
    keys = keys or Keys()
    names = [queue] if queue else sorted(redis.smembers(keys.queues))
    records: list[Record] = []
    for name in names:
        q = keys.queue(name)
        for job_id in redis.zrevrange(q.failed, 0, -1):
            raw = redis.hget(q.job(job_id), "record")
            if raw is None:  # the job's hash expired: nothing left to show or retry
                redis.zrem(q.failed, job_id)
                continue
            record = Record.from_json(raw)
            if cause is None or record.cause is cause:
                records.append(record)
    records.sort(key=lambda r: r.failed_at, reverse=True)
    return records[:limit]


def history(
    redis: SyncRedis, queue: str, *, count: int = 100, keys: Keys | None = None
) -> list[Record]:
    """Every failed or dirty attempt on ``queue``, newest first, retried or not."""
    keys = keys or Keys()
    entries = redis.xrevrange(keys.queue(queue).history, count=count)
    return [Record.from_json(fields["record"]) for _, fields in entries]


def job_state(
    redis: SyncRedis, queue: str, job_id: str, keys: Keys | None = None
) -> dict[str, str]:
    """The job hash as stored: state, attempt, outcome, cause, result, record, timestamps."""
    return redis.hgetall((keys or Keys()).queue(queue).job(job_id))


def timeline(
    redis: SyncRedis, queue: str, job_id: str, keys: Keys | None = None
) -> list[tuple[str, float]]:
    """Every state the job has been in, oldest first: ``[("queued", t), ("running", t), ...]``."""
    raw = redis.hget((keys or Keys()).queue(queue).job(job_id), "timeline") or ""
    entries = []
    for entry in raw.split():
        state, _, at = entry.partition("@")
        entries.append((state, float(at)))
    return entries


def find_queue(redis: SyncRedis, job_id: str, keys: Keys | None = None) -> str | None:
    """The queue a job id belongs to (job ids are unique across queues in practice)."""
    keys = keys or Keys()
    for queue in sorted(redis.smembers(keys.queues)):
        if redis.exists(keys.queue(queue).job(job_id)):
            return queue
    return None


def retry(redis: SyncRedis, queue: str, job_id: str, keys: Keys | None = None) -> bool:
    """Requeue one failed or dirty job with a fresh set of attempts."""
    keys = keys or Keys()
    q = keys.queue(queue)
    raw = redis.hget(q.job(job_id), "payload")
    if raw is None:
        raise SigrunError(f"no job {job_id} on queue {queue} (it may have expired)")
    job = Job.from_json(raw, queue=queue)
    fresh = replace(job, attempt=1, dirty_streak=0, dirty_causes=(), enqueued_at=now())
    return bool(
        _RETRY.run_sync(
            redis,
            [q.job(job_id), q.failed, q.pending],
            [job_id, fresh.to_json(), fresh.enqueued_at],
        )
    )


def retry_all(
    redis: SyncRedis,
    *,
    queue: str | None = None,
    cause: Cause | None = None,
    keys: Keys | None = None,
) -> list[str]:
    """Requeue every failed or dirty job (of one queue, of one cause); return their ids."""
    done = []
    for record in failed(redis, queue=queue, cause=cause, limit=1_000_000, keys=keys):
        if retry(redis, record.queue, record.job_id, keys):
            done.append(record.job_id)
    return done

"""Record the jobs of runners that vanished: the deaths nobody was there to watch.

A runner that is OOM-killed as a whole, evicted, or lost with its node cannot
report its own jobs.  Its heartbeat key expires; any runner (periodically) or
``sigrun reap`` then finds the in-flight lists whose owner is gone and records
a DirtyExit for each job in them.  The operator uses :func:`record_lost_jobs`
too, with the cause it read from the pod's status.

Exactly once: the record is written by the ``finish`` script, which removes the
job from the in-flight list first and does nothing if it is already gone, so
reapers (and the operator) may race freely.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable

from sigrun.runner.errors import PayloadError
from sigrun.runner.jobs import (
    Cause,
    Job,
    Outcome,
    Record,
    RunnerIdentity,
    State,
    Verdict,
    job_id_of_raw,
)
from sigrun.runner.policy import Backoff, Decision, decide, spare
from sigrun.runner.protocol import Store
from sigrun.runner.records import bad_payload_record, record_for

log = logging.getLogger(__name__)

#: Builds the verdict for one lost job; the operator's version reads the pod status.
VerdictFor = Callable[[Job], Verdict]


def runner_lost(runner_id: str, identity: RunnerIdentity | None) -> VerdictFor:
    """The reaper's verdict: the runner stopped heartbeating; we do not know more."""
    where = f" on {identity.pod_name or identity.hostname}" if identity else ""

    def verdict(job: Job) -> Verdict:
        return Verdict(
            outcome=Outcome.DIRTY,
            cause=Cause.RUNNER_LOST,
            message=(
                f"RunnerLost — runner {runner_id}{where} stopped sending heartbeats "
                f"while running this job"
            ),
        )

    return verdict


async def record_lost_jobs(
    store: Store,
    queue: str,
    runner_id: str,
    verdict_for: VerdictFor,
    *,
    identity: RunnerIdentity | None,
    backoff: Backoff,
    now: float,
    collateral: Callable[[Job], bool] = lambda job: False,
) -> list[Record]:
    """Record a DirtyExit for every job in one runner's in-flight list; return the new records.

    Jobs someone else recorded meanwhile are skipped (the script says 0).
    """
    recorded: list[Record] = []
    for payload in await store.inflight(queue, runner_id):
        try:
            job = Job.from_json(payload, queue=queue)
        except PayloadError as e:
            job_id = job_id_of_raw(payload) or synthetic_id(payload)
            record = bad_payload_record(
                payload,
                queue,
                str(e),
                job_id=job_id,
                identity=identity or _nobody(runner_id),
                now=now,
            )
            verdict = Verdict(Outcome.FAILED, Cause.BAD_PAYLOAD, record.message)
            decision = Decision(State.FAILED)
        else:
            verdict = verdict_for(job)
            is_collateral = collateral(job)
            if is_collateral:
                decision = spare(job, now=now, why="collateral of another job's OOM kill")
            else:
                decision = decide(job, verdict, now=now, backoff=backoff)
            maybe = record_for(
                job, verdict, decision, identity=identity, now=now, collateral=is_collateral
            )
            assert maybe is not None  # a lost job is never a success
            record = maybe
        done = await store.finish(
            queue=queue,
            runner_id=runner_id,
            held_payload=payload,
            job_id=record.job_id,
            verdict=verdict,
            decision=decision,
            record=record,
            result=None,
            now=now,
        )
        if done:
            log.warning(
                "DirtyExit of job %s: %s",
                record.job_id,
                record.message,
                extra={"job_id": record.job_id, "queue": queue},
            )
            recorded.append(record)
    return recorded


async def reap(
    store: Store,
    *,
    backoff: Backoff,
    now: float,
    queues: Iterable[str] | None = None,
    leave: Callable[[RunnerIdentity], bool] = lambda identity: False,
) -> list[Record]:
    """Find every runner whose heartbeat expired and record its jobs as RunnerLost.

    ``leave``: lost runners to leave alone, because someone who knows more (the
    operator, holding the pod status that says OOMKilled) will record them.
    """
    recorded: list[Record] = []
    for queue in sorted(queues if queues is not None else await store.queues()):
        runners = await store.runners_of(queue)
        alive = await store.alive(runners)
        for runner_id, identity in runners.items():
            if runner_id in alive or leave(identity):
                continue
            recorded += await record_lost_jobs(
                store,
                queue,
                runner_id,
                runner_lost(runner_id, identity),
                identity=identity,
                backoff=backoff,
                now=now,
            )
            await store.forget_runner(queue, runner_id)
    return recorded


def synthetic_id(payload: str) -> str:
    """A stable id for a payload too broken to carry one, so its record can be found."""
    return "bad-" + hashlib.sha1(payload.encode(errors="replace")).hexdigest()[:16]


def _nobody(runner_id: str) -> RunnerIdentity:
    return RunnerIdentity(runner_id=runner_id, hostname="", pid=0)

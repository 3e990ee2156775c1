"""Build the record kept for a failed or dirty attempt.  Pure; no I/O.

The runner builds records from what it watched (an :class:`Ending`), the
reaper and the operator from what they inferred (a runner that vanished);
both end up in the same shape so ``sigrun failed`` and ``kubectl describe``
read the same way whoever saw the death.
"""

from __future__ import annotations

from sigrun.runner.exits import Ending
from sigrun.runner.jobs import Cause, Job, Outcome, Record, RunnerIdentity, Verdict
from sigrun.runner.policy import Decision


def record_for(
    job: Job,
    verdict: Verdict,
    decision: Decision,
    *,
    identity: RunnerIdentity | None,
    now: float,
    ending: Ending | None = None,
    collateral: bool = False,
) -> Record | None:
    """The record of one attempt, or None for a success (nothing to keep)."""
    if verdict.outcome is Outcome.SUCCEEDED:
        return None
    report = ending.report if ending else None
    message = verdict.message
    if decision.note:
        message = f"{message}; {decision.note}"
    return Record(
        job_id=job.id,
        queue=job.queue,
        func=job.func,
        args=job.args,
        kwargs=job.kwargs,
        attempt=job.attempt,
        outcome=verdict.outcome,
        cause=verdict.cause,
        message=message,
        failed_at=now,
        signal=verdict.signal,
        signal_name=verdict.signal_name,
        exit_code=verdict.exit_code,
        pid=ending.pid if ending else None,
        peak_rss_bytes=ending.peak_rss_bytes if ending else None,
        runtime_seconds=round(ending.runtime_seconds, 3) if ending else None,
        runner_id=identity.runner_id if identity else None,
        hostname=identity.hostname if identity else None,
        pod_name=identity.pod_name if identity else None,
        pod_uid=identity.pod_uid if identity else None,
        exc_type=report.exc_type if report else "",
        exc_message=report.exc_message if report else "",
        traceback=report.traceback if report else "",
        last_words=ending.last_words if ending else (),
        gave_up=decision.gave_up,
        collateral=collateral,
    )


def bad_payload_record(
    raw: str, queue: str, reason: str, *, job_id: str, identity: RunnerIdentity, now: float
) -> Record:
    """A payload that could not be parsed still leaves a trace, with the raw text."""
    return Record(
        job_id=job_id,
        queue=queue,
        func="",
        args=(raw[:2000],),
        kwargs={},
        attempt=1,
        outcome=Outcome.FAILED,
        cause=Cause.BAD_PAYLOAD,
        message=f"BadPayload: {reason}",
        failed_at=now,
        runner_id=identity.runner_id,
        hostname=identity.hostname,
        pod_name=identity.pod_name,
        pod_uid=identity.pod_uid,
    )

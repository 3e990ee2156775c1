"""Retry policy: what happens to a job after one attempt ends.  Pure; no I/O.

The rules a user of RQ or resque-retry would expect, plus the ones they learnt
the hard way:

* a job that cannot even start (bad payload, unknown or forbidden function,
  wrong arguments) is not retried: it would fail the same way again;
* a job killed because its runner was shutting down goes back to the front of
  the queue and does not spend an attempt: it did nothing wrong;
* anything else is retried up to ``max_attempts`` with exponential backoff;
* a job that dies dirty on every attempt ends with "gave up after N dirty
  exits (OOMKilled)" instead of looping forever (resque-retry had exactly that
  bug) or vanishing silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

from sigrun.runner.jobs import Cause, Job, Outcome, State, Verdict


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``base * factor**(attempt-1)``, capped."""

    base_seconds: float = 10.0
    factor: float = 2.0
    max_seconds: float = 3600.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before the attempt after ``attempt`` (which counts from 1)."""
        return min(self.max_seconds, self.base_seconds * self.factor ** max(0, attempt - 1))


@dataclass(frozen=True)
class Decision:
    """What to do with a job after an attempt."""

    state: State
    next_job: Job | None = None  # the payload of the next attempt, when there is one
    due: float | None = None  # when the next attempt may start (RETRYING)
    front: bool = False  # requeue at the front of the queue (shutdown)
    gave_up: bool = False
    note: str = ""  # appended to the record's message, e.g. "retrying in 20s (attempt 2 of 3)"


def decide(job: Job, verdict: Verdict, *, now: float, backoff: Backoff) -> Decision:
    if verdict.outcome is Outcome.SUCCEEDED:
        return Decision(State.SUCCEEDED)

    if verdict.cause is Cause.SHUTDOWN:
        return spare(job, now=now, why="its runner was shutting down")

    if verdict.cause is not None and not verdict.cause.is_retryable:
        return Decision(State.FAILED, note="not retried: it would fail the same way again")

    dirty = verdict.outcome is Outcome.DIRTY
    streak = job.dirty_streak + 1 if dirty else 0
    causes = (*job.dirty_causes, str(verdict.cause)) if dirty else ()

    if job.attempt < job.max_attempts:
        delay = backoff.delay(job.attempt)
        next_job = replace(job, attempt=job.attempt + 1, dirty_streak=streak, dirty_causes=causes)
        return Decision(
            # Without a backoff the job goes straight back to the queue.
            State.RETRYING if delay > 0 else State.QUEUED,
            next_job=next_job,
            due=now + delay,
            note=f"retrying in {delay:g}s (attempt {job.attempt + 1} of {job.max_attempts})",
        )

    if dirty:
        return Decision(State.DIRTY, gave_up=True, note=gave_up_note(streak, causes))
    return Decision(State.FAILED, gave_up=True, note=f"gave up after {job.attempt} attempt(s)")


def gave_up_note(streak: int, causes: tuple[str, ...]) -> str:
    """``gave up after 3 dirty exits (OOMKilled)`` — the line a user searches for."""
    counts = Counter(causes[-streak:])
    named = ", ".join(cause if n == streak else f"{cause} x{n}" for cause, n in counts.items())
    return f"gave up after {streak} dirty exit{'s' if streak != 1 else ''} ({named})"


def spare(job: Job, *, now: float, why: str) -> Decision:
    """Requeue at the front without spending an attempt: the job did nothing wrong."""
    return Decision(State.QUEUED, next_job=job, due=now, front=True, note=f"requeued: {why}")

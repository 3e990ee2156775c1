"""Record the jobs a dead runner pod took with it, once, with the cause the pod status gave.

:mod:`sigrun.operator.deaths` says *that* a runner container died and why;
this module finds *which runner* that was and records a DirtyExit for every
job in its in-flight lists through the runner's own
:func:`~sigrun.runner.reaper.record_lost_jobs` (exactly once, whoever else
races: the runner's reapers, a second operator event for the same death).

Which runner:

* the termination message names it exactly (the runner writes its id there);
* otherwise the runners registered for the queue whose ``pod_uid`` is the pod's,
  that started before the container finished and whose heartbeat has expired.
  A candidate whose heartbeat is still alive is left for later: the caller
  keeps the death and asks again (the runner may simply be draining).

Who is to blame, after a whole-container OOM kill with several children: the
job with the highest resident memory in the runner's last heartbeat is the
likely culprit and spends an attempt; the others are collateral and go back to
the queue without spending one.  With no memory figures, every job is charged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sigrun.operator.deaths import Death
from sigrun.runner.exits import format_bytes, signal_name
from sigrun.runner.jobs import Cause, Job, Outcome, Record, RunnerIdentity, Verdict, job_id_of_raw
from sigrun.runner.policy import Backoff
from sigrun.runner.protocol import Store
from sigrun.runner.reaper import record_lost_jobs

log = logging.getLogger(__name__)

_NAMED = 5  # collateral job ids named in a message before "and N more"


@dataclass
class DeathResult:
    """What one attempt at a death achieved."""

    records: list[Record] = field(default_factory=list)
    waiting: bool = False  # a candidate runner still heartbeats: ask again later


async def record_death(
    store: Store, queues: Sequence[str], death: Death, *, backoff: Backoff, now: float
) -> DeathResult:
    result = DeathResult()
    identities: dict[str, RunnerIdentity] = {}
    for queue in queues:
        identities.update(await store.runners_of(queue))
    if death.runner_id:
        dead = [death.runner_id]
    else:
        candidates = [
            rid
            for rid, who in identities.items()
            if who.pod_uid == death.pod_uid
            and (death.finished_at is None or who.started_at < death.finished_at)
        ]
        alive = await store.alive(candidates)
        dead = [rid for rid in candidates if rid not in alive]
        result.waiting = bool(alive)
    for runner_id in dead:
        identity = identities.get(runner_id) or RunnerIdentity(
            runner_id=runner_id,
            hostname=death.pod_name,
            pid=0,
            pod_name=death.pod_name,
            pod_uid=death.pod_uid,
            pod_namespace=death.namespace,
        )
        result.records += await _record_runner(
            store, queues, death, runner_id, identity, backoff=backoff, now=now
        )
    return result


async def _record_runner(
    store: Store,
    queues: Sequence[str],
    death: Death,
    runner_id: str,
    identity: RunnerIdentity,
    *,
    backoff: Backoff,
    now: float,
) -> list[Record]:
    held: dict[str, list[str]] = {}
    for queue in queues:
        ids = [job_id_of_raw(p) or "" for p in await store.inflight(queue, runner_id)]
        if ids:
            held[queue] = ids
    records: list[Record] = []
    if held:
        all_ids = [job_id for ids in held.values() for job_id in ids]
        rss = _rss(await store.runner_state(runner_id)) if death.cause is Cause.OOM_KILLED else {}
        culprit = likely_culprit(all_ids, rss) if death.cause is Cause.OOM_KILLED else None
        verdict_for = verdicts(death, all_ids, culprit, rss)
        for queue in held:
            records += await record_lost_jobs(
                store,
                queue,
                runner_id,
                verdict_for,
                identity=identity,
                backoff=backoff,
                now=now,
                collateral=lambda job: culprit is not None and job.id != culprit,
            )
        log.warning(
            "runner %s of pod %s/%s died (%s): recorded %d job(s)",
            runner_id,
            death.namespace,
            death.pod_name,
            death.cause,
            len(records),
            extra={"object": f"{death.namespace}/{death.jobqueue}"},
        )
    for queue in queues:
        await store.forget_runner(queue, runner_id)
    return records


def likely_culprit(job_ids: Sequence[str], rss: Mapping[str, int]) -> str | None:
    """The job using the most memory at the last heartbeat; the only job if there is one."""
    if len(job_ids) == 1:
        return job_ids[0]
    known = [(rss[j], j) for j in job_ids if j in rss]
    if not known:
        return None
    return max(known)[1]


def verdicts(
    death: Death, job_ids: Sequence[str], culprit: str | None, rss: Mapping[str, int]
) -> Callable[[Job], Verdict]:
    """The verdict of each job of the dead runner, in Resque's shape plus the pod's words."""
    sig = death.signal

    def memory(job_id: str) -> str:
        if job_id in rss:
            return f"rss {format_bytes(rss[job_id])} at the last heartbeat"
        return "the only job running"

    def verdict(job: Job) -> Verdict:
        message = death.summary
        if death.cause is Cause.OOM_KILLED and culprit is not None:
            blame = f"likely culprit: job {culprit} ({memory(culprit)})"
            if job.id == culprit:
                others = [j for j in job_ids if j != culprit]
                message += f"; {blame}" + (f" — collateral: {_names(others)}" if others else "")
            else:
                message += f"; {blame}"  # the policy adds "requeued: collateral of ..."
        elif death.cause is Cause.OOM_KILLED and len(job_ids) > 1:
            message += (
                f"; {len(job_ids)} jobs were running and no memory figures name the culprit, "
                "so each is charged"
            )
        elif len(job_ids) > 1:
            message += f"; {len(job_ids) - 1} other job(s) were lost with it"
        return Verdict(
            outcome=Outcome.DIRTY,
            cause=death.cause,
            message=message,
            signal=sig,
            signal_name=signal_name(sig) if sig else None,
            exit_code=death.exit_code,
        )

    return verdict


def _names(job_ids: Sequence[str]) -> str:
    named = ", ".join(job_ids[:_NAMED])
    more = len(job_ids) - _NAMED
    return f"{named} and {more} more" if more > 0 else named


def _rss(state: Mapping[str, str]) -> dict[str, int]:
    try:
        body = json.loads(state.get("rss") or "{}")
    except ValueError:
        return {}
    if not isinstance(body, dict):
        return {}
    return {
        str(k): int(v) for k, v in body.items() if isinstance(v, int) and not isinstance(v, bool)
    }

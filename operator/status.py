"""The JobQueue's ``.status``: composed from what a tick learnt.  Pure: no I/O.

``.status`` is what ``kubectl get jq`` and ``kubectl describe jq`` print and
what outlives Events (which expire after an hour): the queue counters, the
replicas, the newest DirtyExit, the history cursor and two conditions,
``Ready`` (can this queue run at all?) and ``Scaling`` (what the autoscaler
decided and why).  Conditions keep their ``lastTransitionTime`` while their
status stays the same, as Kubernetes conventions ask.

Counters move with every job; writing them on every change would turn the
API server into a job log.  :func:`needs_write` lets them wait
:data:`COUNTER_INTERVAL` seconds while anything else is written at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sigrun.operator.events import timestamp
from sigrun.runner.jobs import Record
from sigrun.runner.protocol import QueueDepth

COUNTER_INTERVAL = 5.0
COUNTERS = ("pending", "running", "processed", "failed", "dirtyExits", "queues", "historyCursor")


@dataclass(frozen=True)
class Condition:
    type: str  # Ready | Scaling
    status: bool
    reason: str
    message: str


def conditions(
    previous: Sequence[Mapping[str, Any]],
    wanted: Sequence[Condition],
    *,
    generation: int | None,
    now: float,
) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in previous}
    result = []
    for condition in wanted:
        status = "True" if condition.status else "False"
        old = before.get(condition.type) or {}
        since = old.get("lastTransitionTime") if old.get("status") == status else None
        entry: dict[str, Any] = {
            "type": condition.type,
            "status": status,
            "reason": condition.reason,
            "message": condition.message[:1024],
            "lastTransitionTime": since or timestamp(now),
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        result.append(entry)
    return result


def counters(depths: Mapping[str, QueueDepth]) -> dict[str, Any]:
    per_queue = [
        {
            "name": name,
            "pending": d.pending,
            "running": d.running,
            "processed": d.processed,
            "failed": d.failed,
            "dirtyExits": d.dirty,
        }
        for name, d in depths.items()
    ]
    totals: dict[str, Any] = {
        "pending": sum(d.pending for d in depths.values()),
        "running": sum(d.running for d in depths.values()),
        "processed": sum(d.processed for d in depths.values()),
        "failed": sum(d.failed for d in depths.values()),
        "dirtyExits": sum(d.dirty for d in depths.values()),
    }
    # One queue: the totals say it all (None removes a list left from an earlier spec).
    totals["queues"] = per_queue if len(per_queue) > 1 else None
    return totals


def last_dirty_exit(record: Record) -> dict[str, Any]:
    return {
        "time": timestamp(record.failed_at),
        "job": record.job_id,
        "func": record.func,
        "queue": record.queue,
        "cause": record.cause.value if record.cause else "",
        "pod": record.pod_name or "",
        "message": record.message[:1024],
    }


def compose(
    previous: Mapping[str, Any],
    *,
    generation: int | None,
    conditions_: Sequence[dict[str, Any]],
    depths: Mapping[str, QueueDepth] | None,
    replicas: Mapping[str, int] | None,
    cursor: Mapping[str, str],
    newest_dirty: Record | None,
    scaled_at: float | None,
) -> dict[str, Any]:
    """The whole new status; parts this tick could not learn keep their previous values."""
    status: dict[str, Any] = {k: v for k, v in previous.items() if k not in ("kopf", "conditions")}
    if depths is not None:
        status.update(counters(depths))
    if replicas is not None:
        status["replicas"] = dict(replicas)
    if cursor:
        status["historyCursor"] = dict(cursor)
    if newest_dirty is not None:
        status["lastDirtyExit"] = last_dirty_exit(newest_dirty)
    if scaled_at is not None:
        status["lastScaleTime"] = timestamp(scaled_at)
    if generation is not None:
        status["observedGeneration"] = generation
    status["conditions"] = list(conditions_)
    return status


def needs_write(old: Mapping[str, Any], new: Mapping[str, Any], *, since_last: float) -> bool:
    """Write at once when anything but the counters changed; counters every few seconds."""
    if old == new:
        return False
    keys = set(old) | set(new)
    others = [k for k in keys if k not in COUNTERS and k != "kopf"]
    if any(old.get(k) != new.get(k) for k in others):
        return True
    return since_last >= COUNTER_INTERVAL

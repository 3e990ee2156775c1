"""The operator and the runner pods: deaths read from their status, deletion costs written.

Pods are watched with a plain watch-event handler (no finalizers, no kopf
annotations on pods, see DESIGN.md); :func:`on_pod_event` turns each event
into zero or more :class:`~sigrun.operator.deaths.Death` values and hands them
to the JobQueue's runtime, once per death however often the watch replays it.

Before the autoscaler lowers replicas, :func:`mark_deletion_costs` gives every
runner pod ``controller.kubernetes.io/pod-deletion-cost``: idle pods 0, busy
ones more (by the jobs they hold), so the ReplicaSet deletes idle runners
first.  Pods whose annotation is already right are not written again (the
Kubernetes docs warn against churning this annotation).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sigrun.operator.deaths import deaths_of, restart_count
from sigrun.operator.deployment import LABEL_JOBQUEUE, LABEL_NAME, RUNNER_APP
from sigrun.operator.kube import Body, Kube, KubeError
from sigrun.operator.spec import QueueRef
from sigrun.operator.state import Fleet, PendingDeath, QueueRuntime

log = logging.getLogger(__name__)

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
IDLE_COST = 0
BUSY_COST = 1000  # plus one per job held, so the busiest go last


def jobqueue_of(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    name = labels.get(LABEL_JOBQUEUE)
    if labels.get(LABEL_NAME) != RUNNER_APP or not name:
        return None
    return str(meta.get("namespace", "")), str(name)


def on_pod_event(
    fleet: Fleet, event_type: str | None, pod: Mapping[str, Any], *, now: float
) -> QueueRuntime | None:
    """Queue the deaths this event shows; return the runtime that should handle them now."""
    owner = jobqueue_of(pod)
    meta = pod.get("metadata") or {}
    uid = str(meta.get("uid", ""))
    if owner is None or not uid:
        return None
    deleted = event_type == "DELETED"
    restarts = restart_count(pod)
    deaths = deaths_of(pod, deleted=deleted, previous_restarts=fleet.previous_restarts(uid))
    fleet.observe_pod(uid, restarts, gone=deleted)
    fresh = [d for d in deaths if fleet.first_time(d)]
    if not fresh:
        return None
    namespace, name = owner
    rt = fleet.find(namespace, name)
    for death in fresh:
        log.info(
            "pod %s/%s: %s (%s)",
            namespace,
            death.pod_name,
            death.summary,
            "confirmed" if death.confirmed else "pod gone; waiting for the runner's heartbeat",
            extra={"object": f"{namespace}/{name}"},
        )
        pending = PendingDeath(death, first_seen=now)
        if rt is None:
            fleet.park(namespace, name, pending)
        else:
            rt.deaths.append(pending)
    return rt


def selector(ref: QueueRef) -> str:
    return f"{LABEL_NAME}={RUNNER_APP},{LABEL_JOBQUEUE}={ref.name}"


async def runner_pods(kube: Kube, ref: QueueRef) -> list[Body]:
    pods = await kube.list(f"/api/v1/namespaces/{ref.namespace}/pods", labelSelector=selector(ref))
    return [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]


def deletion_cost(pod: Mapping[str, Any], busy: Mapping[str, int]) -> int:
    """``busy`` maps a pod UID (or name) to the jobs its runners hold."""
    meta = pod.get("metadata") or {}
    jobs = busy.get(str(meta.get("uid", ""))) or busy.get(str(meta.get("name", ""))) or 0
    return BUSY_COST + jobs if jobs else IDLE_COST


async def mark_deletion_costs(kube: Kube, pods: list[Body], busy: Mapping[str, int]) -> int:
    """Annotate every pod with its cost; return how many annotations had to change."""
    changed = 0
    for pod in pods:
        meta = pod.get("metadata") or {}
        wanted = str(deletion_cost(pod, busy))
        if (meta.get("annotations") or {}).get(DELETION_COST) == wanted:
            continue
        path = f"/api/v1/namespaces/{meta.get('namespace')}/pods/{meta.get('name')}"
        try:
            await kube.merge_patch(path, {"metadata": {"annotations": {DELETION_COST: wanted}}})
        except KubeError as e:
            if not e.not_found:
                raise
            continue  # gone meanwhile: nothing left to rank
        changed += 1
    if changed:
        log.info("set %s on %d runner pod(s) before scaling down", DELETION_COST, changed)
    return changed

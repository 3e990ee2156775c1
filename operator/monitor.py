"""One JobQueue, one pass: reconcile, read the queues, scale, record deaths, report.

Called by the kopf timer every few seconds, by the spec-change handlers at
once, and (the death-and-report half only) by the pod watch when a runner
dies, always under the JobQueue's lock.  Level-based: each pass looks at the
world as it is now, so a missed event or an operator restart costs nothing
but a few seconds.

Order matters once: deaths are recorded before the history is read, so the
DirtyExits the operator itself just wrote become Events in the same pass.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sigrun.operator.deaths import parse_time
from sigrun.operator.deployment import deployment_name
from sigrun.operator.events import EventRecorder, EventSpec
from sigrun.operator.history import (
    cursor_through,
    dirty_exit_events,
    initial_cursor,
    read_after,
)
from sigrun.operator.kube import Body, Kube, KubeError
from sigrun.operator.lost import record_death
from sigrun.operator.pods import mark_deletion_costs, runner_pods
from sigrun.operator.reconcile import Problem, Reconciled, deployment_path, reconcile
from sigrun.operator.scaling import Load, ScaleDecision, decide
from sigrun.operator.spec import JobQueueSpec, QueueRef
from sigrun.operator.state import DEATH_PATIENCE_SECONDS, Fleet, QueueRuntime
from sigrun.operator.status import Condition, compose, conditions, needs_write
from sigrun.runner.jobs import Record
from sigrun.runner.policy import Backoff
from sigrun.runner.protocol import QueueDepth, Store
from sigrun.runner.reaper import reap
from sigrun.runner.redisio import CONNECTION_ERRORS

log = logging.getLogger(__name__)

#: Distinct DirtyExit Events written per JobQueue per pass (the rest wait a pass).
EVENTS_PER_PASS = 10
SCALER = "sigrun-autoscaler"


@dataclass
class Context:
    """The operator process: its API client, Event recorder, memory and settings."""

    kube: Kube
    events: EventRecorder
    fleet: Fleet
    runner_image: str


def queue_ref(body: Mapping[str, Any]) -> QueueRef:
    meta = body.get("metadata") or {}
    return QueueRef(str(meta.get("namespace", "")), str(meta.get("name", "")), str(meta["uid"]))


def runtime_of(ctx: Context, body: Mapping[str, Any], now: float) -> QueueRuntime:
    meta = body.get("metadata") or {}
    created = parse_time(meta.get("creationTimestamp")) or now
    return ctx.fleet.runtime(queue_ref(body), created_at=created, status=body.get("status") or {})


async def tick(ctx: Context, body: Mapping[str, Any], *, now: float) -> None:
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return  # going away: the garbage collector takes the Deployment with it
    rt = runtime_of(ctx, body, now)
    async with rt.lock:
        await _tick(ctx, rt, body, now)


async def _tick(ctx: Context, rt: QueueRuntime, body: Mapping[str, Any], now: float) -> None:
    generation = (body.get("metadata") or {}).get("generation")
    done = await reconcile(
        ctx.kube, rt, body.get("spec") or {}, default_image=ctx.runner_image, now=now
    )
    rt.spec = done.spec or rt.spec
    depths: dict[str, QueueDepth] | None = None
    replicas = _replicas(done.deployment)
    scaling = Condition("Scaling", False, "NotReady", "waiting for the JobQueue to be Ready")
    scaled_at: float | None = None
    newest: Record | None = None
    if done.store is not None and done.spec is not None:
        try:
            depths = await read_depths(done.store, done.spec, now)
            await record_deaths(rt, done.store, done.spec, now)
            await reap_lost_runners(rt, done.store, done.spec, now)
            if done.deployment is not None:
                replicas, scaling, scaled_at = await autoscale(ctx, rt, done, depths, now)
            newest = await report_dirty_exits(ctx, rt, done.store, done.spec, now)
        except CONNECTION_ERRORS as e:
            done.problem = done.problem or Problem("RedisUnreachable", f"Redis went away: {e}")
            scaling = Condition("Scaling", False, "RedisUnreachable", str(e))
    elif done.problem is not None:
        scaling = Condition("Scaling", False, done.problem.reason, "cannot read the queues")
    ready = _ready(done, replicas)
    await announce(ctx, rt, ready, now)
    wanted = conditions(
        rt.status.get("conditions") or [], [ready, scaling], generation=generation, now=now
    )
    await write_status(
        ctx.kube,
        rt,
        wanted,
        generation=generation,
        depths=depths,
        replicas=replicas,
        newest=newest,
        scaled_at=scaled_at,
        now=now,
    )


async def react(ctx: Context, rt: QueueRuntime, *, now: float) -> None:
    """A runner died: record its jobs and post the Events now, not at the next tick."""
    async with rt.lock:
        if rt.store is None or rt.spec is None or not rt.deaths:
            return  # the next tick does it, once Redis is reachable
        try:
            await record_deaths(rt, rt.store, rt.spec, now)
            newest = await report_dirty_exits(ctx, rt, rt.store, rt.spec, now)
        except CONNECTION_ERRORS as e:
            log.warning(
                "recording the deaths in %s waits for Redis: %s",
                rt.ref,
                e,
                extra={"object": str(rt.ref)},
            )
            return
        await write_status(
            ctx.kube,
            rt,
            rt.status.get("conditions") or [],
            generation=None,
            depths=None,
            replicas=None,
            newest=newest,
            scaled_at=None,
            now=now,
        )


async def read_depths(store: Store, spec: JobQueueSpec, now: float) -> dict[str, QueueDepth]:
    depths = {}
    for queue in spec.queues:
        await store.promote(queue, now)  # due retries, even while no runner is up to do it
        depths[queue] = await store.depth(queue)
    return depths


async def record_deaths(rt: QueueRuntime, store: Store, spec: JobQueueSpec, now: float) -> None:
    backoff = Backoff(base_seconds=spec.retry.backoff_seconds)
    waiting = []
    for pending in rt.deaths:
        result = await record_death(store, spec.queues, pending.death, backoff=backoff, now=now)
        if result.waiting and now - pending.first_seen < DEATH_PATIENCE_SECONDS:
            waiting.append(pending)
    rt.deaths = waiting


async def reap_lost_runners(rt: QueueRuntime, store: Store, spec: JobQueueSpec, now: float) -> None:
    """Record the jobs of runners whose heartbeat expired while their pod looked fine.

    A runner that hangs, is stopped, or is cut off from Redis stops heartbeating
    with no pod status to say so.  The runners' own reapers would find it, but a
    queue may have no other runner (one replica, or scaled down), and its jobs
    must not wait for one.  Runners of pods whose death is still pending are
    left to :func:`record_deaths`, which knows the cause.
    """
    dying = {pending.death.pod_uid for pending in rt.deaths}
    await reap(
        store,
        backoff=Backoff(base_seconds=spec.retry.backoff_seconds),
        now=now,
        queues=spec.queues,
        leave=lambda identity: bool(identity.pod_uid) and identity.pod_uid in dying,
    )


async def autoscale(
    ctx: Context, rt: QueueRuntime, done: Reconciled, depths: Mapping[str, QueueDepth], now: float
) -> tuple[dict[str, int], Condition, float | None]:
    assert done.store is not None and done.spec is not None and done.deployment is not None
    store, spec = done.store, done.spec
    held: Counter[str] = Counter()
    for depth in depths.values():
        held.update(depth.inflight)
    owners: dict[str, str] = {}
    for queue in spec.queues:
        for rid, who in (await store.runners_of(queue)).items():
            owners[rid] = who.pod_uid or who.pod_name or rid
    alive = await store.alive([rid for rid, n in held.items() if n > 0])
    busy: Counter[str] = Counter()
    for rid in alive:
        busy[owners.get(rid, rid)] += held[rid]
    load = Load(
        pending=sum(d.pending for d in depths.values()),
        inflight=sum(held.values()),
        busy_runners=len(busy),
    )
    replicas = _replicas(done.deployment)
    current = replicas["current"]
    decision = decide(load, spec.scaling, current=current, memory=rt.scale, now=now)
    replicas.update(desired=decision.replicas, busy=len(busy))
    scaling = Condition("Scaling", True, decision.reason.value, decision.message)
    if decision.replicas == current:
        rt.scale = decision.memory
        return replicas, scaling, None
    if decision.replicas < current:
        pods = await runner_pods(ctx.kube, rt.ref)
        if await mark_deletion_costs(ctx.kube, pods, busy):
            # Let the ReplicaSet controller see the new costs before it picks pods to delete.
            message = f"ranking idle runners first before scaling down to {decision.replicas}"
            return replicas, Condition("Scaling", True, "PreparingScaleDown", message), None
    rt.deployment_generation = await scale_to(ctx.kube, rt.ref, decision.replicas)
    rt.scale = decision.memory
    replicas["current"] = decision.replicas
    await ctx.events.post(rt.ref, _scaled(decision, current), now=now)
    return replicas, scaling, now


async def scale_to(kube: Kube, ref: QueueRef, replicas: int) -> int | None:
    """Set the replicas; return the Deployment's new generation (ours, not a hand edit)."""
    body = {"spec": {"replicas": replicas}}
    done = await kube.merge_patch(deployment_path(ref), body, manager=SCALER)
    log.info(
        "deployment %s/%s scaled to %d",
        ref.namespace,
        deployment_name(ref.name),
        replicas,
        extra={"object": str(ref)},
    )
    generation = (done.get("metadata") or {}).get("generation")
    return int(generation) if generation is not None else None


def _scaled(decision: ScaleDecision, current: int) -> EventSpec:
    direction = "up" if decision.replicas > current else "down"
    return EventSpec(
        type="Normal",
        reason="Scaled",
        message=f"Scaled runners {direction} from {current} to {decision.replicas}: {decision.why}",
        key=direction,
    )


async def report_dirty_exits(
    ctx: Context, rt: QueueRuntime, store: Store, spec: JobQueueSpec, now: float
) -> Record | None:
    """Post Events for new dirty records; return the newest one (for ``lastDirtyExit``)."""
    default = initial_cursor(rt.created_at)
    for queue in spec.queues:
        rt.cursor.setdefault(queue, default)
    entries, advanced = await read_after(
        store.redis, store.keys, spec.queues, rt.cursor, default=default
    )
    events, covered = dirty_exit_events(entries, limit=EVENTS_PER_PASS)
    for event in events:
        await ctx.events.post(rt.ref, event, now=now)
    rt.cursor = cursor_through(entries, covered, rt.cursor, advanced)
    dirty = [e.record for e in entries[:covered] if e.dirty]
    # Of records written at the same moment (one group OOM kill), the culprit tells more.
    return max(dirty, key=lambda r: (r.failed_at, not r.collateral)) if dirty else None


def _replicas(deployment: Body | None) -> dict[str, int]:
    spec = (deployment or {}).get("spec") or {}
    status = (deployment or {}).get("status") or {}
    current = int(spec.get("replicas") or 0)
    return {
        "desired": current,
        "current": current,
        "ready": int(status.get("readyReplicas") or 0),
        "busy": 0,
    }


def _ready(done: Reconciled, replicas: Mapping[str, int]) -> Condition:
    if done.problem is not None:
        return Condition("Ready", False, done.problem.reason, done.problem.message)
    return Condition(
        "Ready",
        True,
        "Reconciled",
        f"runner Deployment applied ({replicas.get('ready', 0)}/{replicas.get('current', 0)} "
        "pods ready) and Redis reachable",
    )


async def announce(ctx: Context, rt: QueueRuntime, ready: Condition, now: float) -> None:
    """A Warning when the JobQueue stops being Ready (or fails differently); Normal on recovery."""
    before = next((c for c in rt.status.get("conditions") or [] if c.get("type") == "Ready"), None)
    was_ready = before is not None and before.get("status") == "True"
    if ready.status:
        if before is not None and not was_ready:
            await ctx.events.post(
                rt.ref, EventSpec("Normal", "Ready", f"Ready again: {ready.message}"), now=now
            )
        return
    if was_ready or before is None or before.get("reason") != ready.reason:
        spec = EventSpec("Warning", ready.reason, ready.message, key=ready.reason)
        await ctx.events.post(rt.ref, spec, now=now)


async def write_status(
    kube: Kube,
    rt: QueueRuntime,
    wanted: list[dict[str, Any]],
    *,
    generation: int | None,
    depths: Mapping[str, QueueDepth] | None,
    replicas: Mapping[str, int] | None,
    newest: Record | None,
    scaled_at: float | None,
    now: float,
) -> None:
    new = compose(
        rt.status,
        generation=generation,
        conditions_=wanted,
        depths=depths,
        replicas=replicas,
        cursor=rt.cursor,
        newest_dirty=newest,
        scaled_at=scaled_at,
    )
    if not needs_write(rt.status, new, since_last=now - rt.status_written_at):
        return
    try:
        await kube.merge_patch(f"{rt.ref.path}/status", {"status": new})
    except KubeError as e:
        if e.not_found:
            return  # deleted meanwhile
        raise
    rt.status = new
    rt.status_written_at = now

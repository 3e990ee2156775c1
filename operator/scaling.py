"""How many runners a JobQueue should have.  Pure policy: load, spec, memory, now -> replicas.

The rule (DESIGN.md, "Scaling")::

    desired = clamp(ceil((pending + in_flight) / jobsPerReplica), minReplicas, maxReplicas)

with three refinements, each one a complaint users of queue autoscalers have:

* in-flight jobs count: the pending list shrinks the moment a runner takes a
  job, and scaling on it alone kills busy runners;
* going down waits: replicas drop only after the load has not needed the
  current number for ``cooldownSeconds``, and drop to ``minReplicas`` (zero)
  only after ``cooldownSeconds`` with no job at all, so a bursty queue does
  not thrash;
* busy runners are a floor: never below the number of runners holding jobs,
  unless ``maxReplicas`` itself is lower.  (Which pods go is steered
  separately, with ``controller.kubernetes.io/pod-deletion-cost``.)

Going up is immediate.  The two timestamps the rule needs are returned in a
:class:`ScaleMemory` the caller keeps between calls; a fresh memory (operator
restart) starts the cooldown from now, which is the cautious choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from sigrun.operator.spec import ScalingSpec


class ScaleReason(StrEnum):
    """Why the replicas are what they are; the Scaling condition's reason."""

    SCALED_UP = "ScaledUp"
    STEADY = "Steady"
    LIMITED_BY_MAX = "LimitedByMaxReplicas"
    COOLING_DOWN = "CoolingDown"
    SCALED_DOWN = "ScaledDown"
    KEPT_FOR_BUSY_RUNNERS = "KeptForBusyRunners"
    IDLE = "Idle"


@dataclass(frozen=True)
class Load:
    pending: int  # jobs waiting in the queues
    inflight: int  # jobs runners hold right now
    busy_runners: int  # live runners (pods) holding at least one job

    @property
    def jobs(self) -> int:
        return self.pending + self.inflight


@dataclass(frozen=True)
class ScaleMemory:
    last_needed: float | None = None  # last time the load needed at least the current replicas
    last_work: float | None = None  # last time any job was pending or in flight


@dataclass(frozen=True)
class ScaleDecision:
    replicas: int
    reason: ScaleReason
    message: str  # the Scaling condition's message
    memory: ScaleMemory
    why: str = ""  # for the Scaled Event: "40 pending + 0 in flight, 8 jobs per replica"


def needed(load: Load, spec: ScalingSpec) -> int:
    """Runners the load asks for before the limits apply."""
    return math.ceil(load.jobs / spec.jobs_per_replica) if load.jobs > 0 else 0


def decide(
    load: Load, spec: ScalingSpec, *, current: int, memory: ScaleMemory, now: float
) -> ScaleDecision:
    want = needed(load, spec)
    target = min(max(want, spec.min_replicas), spec.max_replicas)
    last_work = now if load.jobs > 0 else memory.last_work
    what = (
        f"{load.pending} pending + {load.inflight} in flight, "
        f"{spec.jobs_per_replica} jobs per replica"
    )

    if current > spec.max_replicas:
        # The user lowered the ceiling: that is an order, not a load signal to smooth.
        return ScaleDecision(
            spec.max_replicas,
            ScaleReason.LIMITED_BY_MAX,
            f"{spec.max_replicas} replica(s): maxReplicas lowered from {current}; {what}",
            ScaleMemory(last_needed=now, last_work=last_work),
            why=f"maxReplicas lowered to {spec.max_replicas}",
        )
    if target >= current:
        remembered = ScaleMemory(last_needed=now, last_work=last_work)
        if want > spec.max_replicas:
            reason, note = ScaleReason.LIMITED_BY_MAX, f"limited by maxReplicas {spec.max_replicas}"
        elif target > current:
            reason, note = ScaleReason.SCALED_UP, f"scaled up from {current}"
        else:
            reason, note = ScaleReason.STEADY, "steady"
        why = what if reason is not ScaleReason.LIMITED_BY_MAX else f"{what}; {note}"
        return ScaleDecision(
            target, reason, f"{target} replica(s) for {what}; {note}", remembered, why=why
        )

    # The load would fit in fewer runners: wait out the cooldown first.
    last_needed = memory.last_needed if memory.last_needed is not None else now
    quiet_since = last_needed
    if load.jobs == 0 and target == spec.min_replicas:
        # Dropping to the floor (zero) needs the queue idle, not merely lighter.
        quiet_since = max(last_needed, last_work if last_work is not None else now)
    remembered = ScaleMemory(last_needed=last_needed, last_work=last_work)
    waited = now - quiet_since
    if waited < spec.cooldown_seconds:
        left = spec.cooldown_seconds - waited
        return ScaleDecision(
            current,
            ScaleReason.COOLING_DOWN,
            f"{current} replica(s) kept for {left:.0f}s more of the {spec.cooldown_seconds}s "
            f"cooldown; {what} would need {target}",
            remembered,
        )

    floor = min(load.busy_runners, spec.max_replicas)
    desired = max(target, floor)
    if desired >= current:
        return ScaleDecision(
            current,
            ScaleReason.KEPT_FOR_BUSY_RUNNERS,
            f"{current} replica(s) kept: {load.busy_runners} runner(s) hold jobs; {what}",
            remembered,
        )
    if desired > target:
        reason = ScaleReason.KEPT_FOR_BUSY_RUNNERS
        note = f"not below the {load.busy_runners} runner(s) holding jobs"
    elif load.jobs == 0:
        reason, note = ScaleReason.IDLE, f"idle for {waited:.0f}s"
    else:
        reason, note = ScaleReason.SCALED_DOWN, f"after a {spec.cooldown_seconds}s cooldown"
    return ScaleDecision(
        desired,
        reason,
        f"{desired} replica(s) for {what}; scaled down from {current}, {note}",
        # The new size is what the load needs now: the next step down waits a cooldown again.
        ScaleMemory(last_needed=now, last_work=last_work),
        why=f"{what}; {note}",
    )

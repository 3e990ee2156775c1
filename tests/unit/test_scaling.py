"""The autoscaler's policy as a table: load, spec, memory, now -> replicas and why."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sigrun.operator.scaling import Load, ScaleMemory, ScaleReason, decide, needed
from sigrun.operator.spec import ScalingSpec

SPEC = ScalingSpec(min_replicas=0, max_replicas=12, jobs_per_replica=10, cooldown_seconds=60)
NOW = 10_000.0


@dataclass(frozen=True)
class Case:
    name: str
    load: Load
    current: int
    memory: ScaleMemory
    replicas: int
    reason: ScaleReason
    spec: ScalingSpec = SPEC


def idle_for(seconds: float) -> ScaleMemory:
    return ScaleMemory(last_needed=NOW - seconds, last_work=NOW - seconds)


CASES = [
    Case(
        "backlog_of_100_asks_for_10", Load(100, 0, 0), 0, ScaleMemory(), 10, ScaleReason.SCALED_UP
    ),
    Case(
        "in_flight_jobs_count_like_pending",
        Load(0, 35, 4),
        0,
        ScaleMemory(),
        4,
        ScaleReason.SCALED_UP,
    ),
    Case("one_job_needs_one_runner", Load(1, 0, 0), 0, ScaleMemory(), 1, ScaleReason.SCALED_UP),
    Case(
        "max_replicas_caps_a_flood",
        Load(10_000, 0, 0),
        3,
        ScaleMemory(),
        12,
        ScaleReason.LIMITED_BY_MAX,
    ),
    Case("steady_when_the_load_fits", Load(50, 45, 9), 10, ScaleMemory(), 10, ScaleReason.STEADY),
    Case(
        "min_replicas_is_a_floor_when_idle",
        Load(0, 0, 0),
        0,
        ScaleMemory(),
        2,
        ScaleReason.SCALED_UP,
        ScalingSpec(min_replicas=2, max_replicas=5, jobs_per_replica=10, cooldown_seconds=60),
    ),
    Case(
        "idle_but_inside_the_cooldown_keeps_replicas",
        Load(0, 0, 0),
        10,
        idle_for(30),
        10,
        ScaleReason.COOLING_DOWN,
    ),
    Case(
        "idle_past_the_cooldown_goes_to_zero", Load(0, 0, 0), 10, idle_for(61), 0, ScaleReason.IDLE
    ),
    Case(
        "lighter_load_past_the_cooldown_goes_down_to_fit",
        Load(25, 5, 1),
        10,
        ScaleMemory(last_needed=NOW - 61, last_work=NOW),
        3,
        ScaleReason.SCALED_DOWN,
    ),
    Case(
        "busy_runners_are_a_floor",
        Load(0, 3, 3),
        10,
        ScaleMemory(last_needed=NOW - 61, last_work=NOW),
        3,
        ScaleReason.KEPT_FOR_BUSY_RUNNERS,
    ),
    Case(
        "busy_runners_keep_the_current_size",
        Load(0, 10, 10),
        10,
        ScaleMemory(last_needed=NOW - 61, last_work=NOW),
        10,
        ScaleReason.KEPT_FOR_BUSY_RUNNERS,
    ),
    Case(
        "max_replicas_wins_over_busy_runners",
        Load(0, 8, 8),
        8,
        ScaleMemory(last_needed=NOW - 1, last_work=NOW),
        4,
        ScaleReason.LIMITED_BY_MAX,
        ScalingSpec(min_replicas=0, max_replicas=4, jobs_per_replica=10, cooldown_seconds=60),
    ),
    Case(
        "lowered_max_applies_at_once",
        Load(500, 0, 0),
        12,
        ScaleMemory(last_needed=NOW, last_work=NOW),
        5,
        ScaleReason.LIMITED_BY_MAX,
        ScalingSpec(min_replicas=0, max_replicas=5, jobs_per_replica=10, cooldown_seconds=60),
    ),
    Case(
        "going_to_zero_needs_the_queue_idle_not_just_lighter",
        Load(0, 0, 0),
        2,
        ScaleMemory(last_needed=NOW - 500, last_work=NOW - 5),
        2,
        ScaleReason.COOLING_DOWN,
    ),
    Case(
        "a_fresh_operator_starts_the_cooldown_now",
        Load(0, 0, 0),
        6,
        ScaleMemory(),
        6,
        ScaleReason.COOLING_DOWN,
    ),
    Case(
        "zero_cooldown_scales_down_at_once",
        Load(0, 0, 0),
        6,
        ScaleMemory(),
        0,
        ScaleReason.IDLE,
        ScalingSpec(min_replicas=0, max_replicas=12, jobs_per_replica=10, cooldown_seconds=0),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decision(case: Case) -> None:
    decision = decide(case.load, case.spec, current=case.current, memory=case.memory, now=NOW)
    assert (decision.replicas, decision.reason) == (case.replicas, case.reason), decision.message


@pytest.mark.parametrize(
    ("pending", "inflight", "per_replica", "want"),
    [(0, 0, 10, 0), (1, 0, 10, 1), (10, 0, 10, 1), (11, 0, 10, 2), (60, 40, 10, 10), (7, 3, 1, 10)],
)
def test_needed_is_the_ceiling_of_jobs_over_jobs_per_replica(
    pending: int, inflight: int, per_replica: int, want: int
) -> None:
    spec = ScalingSpec(jobs_per_replica=per_replica)
    assert needed(Load(pending, inflight, 0), spec) == want


def test_scaling_up_remembers_the_load_needed_the_pool_now() -> None:
    decision = decide(Load(100, 0, 0), SPEC, current=2, memory=ScaleMemory(), now=NOW)
    assert decision.memory == ScaleMemory(last_needed=NOW, last_work=NOW)


def test_cooling_down_keeps_the_time_the_load_last_needed_the_pool() -> None:
    memory = ScaleMemory(last_needed=NOW - 20, last_work=NOW - 20)
    decision = decide(Load(0, 0, 0), SPEC, current=5, memory=memory, now=NOW)
    assert decision.memory == memory
    assert "40s more of the 60s cooldown" in decision.message


def test_each_step_down_waits_a_full_cooldown_again() -> None:
    first = decide(Load(0, 2, 2), SPEC, current=10, memory=ScaleMemory(NOW - 61, NOW), now=NOW)
    assert first.replicas == 2
    second = decide(Load(0, 0, 0), SPEC, current=2, memory=first.memory, now=NOW + 30)
    assert (second.replicas, second.reason) == (2, ScaleReason.COOLING_DOWN)
    third = decide(Load(0, 0, 0), SPEC, current=2, memory=first.memory, now=NOW + 61)
    assert (third.replicas, third.reason) == (0, ScaleReason.IDLE)


def test_the_message_says_what_the_numbers_were() -> None:
    decision = decide(Load(93, 7, 0), SPEC, current=0, memory=ScaleMemory(), now=NOW)
    assert decision.message == (
        "10 replica(s) for 93 pending + 7 in flight, 10 jobs per replica; scaled up from 0"
    )

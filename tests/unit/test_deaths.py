"""Runner deaths read from pod statuses, as a kubelet writes them: a table of cases."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from sigrun.operator.deaths import (
    Death,
    deaths_of,
    describe_exit,
    parse_termination_message,
    parse_time,
)
from sigrun.runner.jobs import Cause

FINISHED = "2026-03-01T12:00:05Z"
MESSAGE = json.dumps({"runner": "imports-runner-abc:1:f00", "jobs": ["j1", "j2"]})


def terminated(reason: str, code: int, message: str = MESSAGE) -> dict[str, Any]:
    return {
        "reason": reason,
        "exitCode": code,
        "message": message,
        "startedAt": "2026-03-01T11:00:00Z",
        "finishedAt": FINISHED,
        "containerID": "containerd://abc",
    }


def pod(
    *,
    restarts: int = 0,
    last: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    phase: str = "Running",
    reason: str | None = None,
    message: str | None = None,
    disruption: str | None = None,
    deleting: bool = False,
    limit: str | None = "512Mi",
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": phase,
        "containerStatuses": [
            {
                "name": "runner",
                "restartCount": restarts,
                "state": state if state is not None else {"running": {"startedAt": FINISHED}},
                "lastState": {"terminated": last} if last else {},
            }
        ],
        "conditions": [],
    }
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    if disruption:
        status["conditions"].append(
            {"type": "DisruptionTarget", "status": "True", "reason": disruption, "message": "why"}
        )
    meta: dict[str, Any] = {
        "name": "imports-runner-abc",
        "namespace": "team-a",
        "uid": "pod-uid-1",
        "labels": {"app.kubernetes.io/name": "sigrun-runner", "sigrun.dev/jobqueue": "imports"},
    }
    if deleting:
        meta["deletionTimestamp"] = FINISHED
    resources = {"limits": {"memory": limit}} if limit else {}
    return {
        "metadata": meta,
        "spec": {"nodeName": "node-1", "containers": [{"name": "runner", "resources": resources}]},
        "status": status,
    }


@dataclass(frozen=True)
class Case:
    name: str
    pod: dict[str, Any]
    causes: list[Cause]
    previous: int | None = 0
    deleted: bool = False
    confirmed: list[bool] = field(default_factory=lambda: [True])


CASES = [
    Case("healthy_pod_has_no_death", pod(), []),
    Case(
        "restart_after_whole_container_oom_is_oomkilled",
        pod(restarts=1, last=terminated("OOMKilled", 137)),
        [Cause.OOM_KILLED],
    ),
    Case(
        "an_old_restart_already_seen_is_not_a_new_death",
        pod(restarts=1, last=terminated("OOMKilled", 137)),
        [],
        previous=1,
    ),
    Case(
        "first_sight_counts_the_last_restart_again",
        pod(restarts=3, last=terminated("OOMKilled", 137)),
        [Cause.OOM_KILLED],
        previous=None,
    ),
    Case(
        "sigkill_without_oom_reason_is_runner_lost_not_oom",
        pod(restarts=1, last=terminated("Error", 137)),
        [Cause.RUNNER_LOST],
    ),
    Case(
        "a_crashed_runner_is_runner_lost",
        pod(restarts=1, last=terminated("Error", 1)),
        [Cause.RUNNER_LOST],
    ),
    Case(
        "node_pressure_eviction_is_evicted_even_with_exit_137",
        pod(
            state={"terminated": terminated("Error", 137)},
            phase="Failed",
            reason="Evicted",
            message="The node was low on resource: memory.",
            disruption="TerminationByKubelet",
        ),
        [Cause.EVICTED],
    ),
    Case(
        "evicted_reason_alone_is_enough",
        pod(state={"terminated": terminated("Error", 137)}, phase="Failed", reason="Evicted"),
        [Cause.EVICTED],
    ),
    Case(
        "api_eviction_is_evicted",
        pod(
            state={"terminated": terminated("Error", 137)},
            deleting=True,
            disruption="EvictionByEvictionAPI",
        ),
        [Cause.EVICTED],
    ),
    Case(
        "scheduler_preemption_is_preempted",
        pod(
            state={"terminated": terminated("Error", 137)},
            deleting=True,
            disruption="PreemptionByScheduler",
        ),
        [Cause.PREEMPTED],
    ),
    Case(
        "taint_manager_deletion_is_node_lost",
        pod(deleting=True, disruption="DeletionByTaintManager"),
        [Cause.NODE_LOST],
        deleted=True,
        confirmed=[False],
    ),
    Case(
        "pod_gc_of_an_orphan_is_node_lost",
        pod(deleting=True, disruption="DeletionByPodGC"),
        [Cause.NODE_LOST],
        deleted=True,
        confirmed=[False],
    ),
    Case(
        "grace_period_expiry_while_deleting_is_deleted",
        pod(state={"terminated": terminated("Error", 137)}, deleting=True),
        [Cause.DELETED],
    ),
    Case(
        "oom_during_deletion_is_still_oom",
        pod(
            state={"terminated": terminated("OOMKilled", 137)},
            deleting=True,
            disruption="EvictionByEvictionAPI",
        ),
        [Cause.OOM_KILLED],
    ),
    Case(
        "pod_gone_without_a_container_report_is_an_unconfirmed_deletion",
        pod(deleting=True),
        [Cause.DELETED],
        deleted=True,
        confirmed=[False],
    ),
    Case(
        "deleting_without_a_report_yet_is_no_death_the_runner_may_be_draining",
        pod(deleting=True),
        [],
    ),
    Case(
        "a_drained_runner_is_a_death_with_no_jobs_to_record",
        pod(
            state={
                "terminated": terminated("Completed", 0, json.dumps({"runner": "r", "jobs": []}))
            },
            deleting=True,
        ),
        [Cause.DELETED],
    ),
    Case(
        "restart_and_later_death_of_the_new_container_are_two_deaths",
        pod(
            restarts=2,
            last=terminated("OOMKilled", 137),
            state={"terminated": terminated("Error", 137)},
            deleting=True,
        ),
        [Cause.OOM_KILLED, Cause.DELETED],
        previous=1,
        confirmed=[True, True],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_classification(case: Case) -> None:
    deaths = deaths_of(case.pod, deleted=case.deleted, previous_restarts=case.previous)
    assert [d.cause for d in deaths] == case.causes
    if deaths:
        assert [d.confirmed for d in deaths] == case.confirmed


def one(p: dict[str, Any], **kw: Any) -> Death:
    [death] = deaths_of(
        p, deleted=kw.pop("deleted", False), previous_restarts=kw.pop("previous", 0)
    )
    return death


def test_oom_death_names_runner_jobs_limit_and_time() -> None:
    death = one(pod(restarts=1, last=terminated("OOMKilled", 137)))
    assert death.runner_id == "imports-runner-abc:1:f00"
    assert death.job_ids == ("j1", "j2")
    assert death.memory_limit == "512Mi"
    assert death.finished_at == parse_time(FINISHED)
    assert (death.exit_code, death.signal) == (137, 9)
    assert (death.namespace, death.pod_name, death.pod_uid, death.jobqueue) == (
        "team-a",
        "imports-runner-abc",
        "pod-uid-1",
        "imports",
    )
    assert death.summary == (
        "runner container OOMKilled (exit 137, SIGKILL) in pod imports-runner-abc: "
        "memory limit 512Mi"
    )


@pytest.mark.parametrize(
    ("p", "summary"),
    [
        (
            pod(
                state={"terminated": terminated("Error", 137)},
                phase="Failed",
                reason="Evicted",
                message="The node was low on resource: memory.",
            ),
            "runner pod imports-runner-abc evicted (The node was low on resource: memory.) "
            "(container exit 137, SIGKILL)",
        ),
        (
            pod(state={"terminated": terminated("Error", 137)}, deleting=True),
            "runner pod imports-runner-abc deleted; the runner was killed when the grace period "
            "ran out (container exit 137, SIGKILL)",
        ),
        (
            pod(restarts=1, last=terminated("Error", 137)),
            "runner container in pod imports-runner-abc died (exit 137, SIGKILL, reason Error) and "
            "no OOM report (a liveness probe, a kill by hand, or an OOM the runtime missed)",
        ),
    ],
)
def test_summaries_read_like_a_diagnosis(p: dict[str, Any], summary: str) -> None:
    assert one(p).summary == summary


def test_the_same_death_seen_twice_has_the_same_key() -> None:
    """The kubelet first reports state.terminated, then lastState after the restart."""
    before = one(pod(restarts=0, state={"terminated": terminated("OOMKilled", 137)}))
    after = one(pod(restarts=1, last=terminated("OOMKilled", 137)))
    assert before.key == after.key


@pytest.mark.parametrize(
    ("message", "want"),
    [
        (MESSAGE, ("imports-runner-abc:1:f00", ("j1", "j2"))),
        ('{"runner": "r", "jobs": []}', ("r", ())),
        ("", (None, ())),
        ("Traceback (most recent call last):", (None, ())),
        ('["not", "an", "object"]', (None, ())),
        ('{"runner": 5, "jobs": "j1"}', (None, ())),
        ('{"runner": "r", "jobs": ["ok", 3, ""]}', ("r", ("ok",))),
        ('{"runner": "r", "jobs": ["j1"', (None, ())),  # cut at the 4 KiB limit
    ],
)
def test_termination_message_is_parsed_and_garbage_tolerated(
    message: str, want: tuple[str | None, tuple[str, ...]]
) -> None:
    assert parse_termination_message(message) == want


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (137, "exit 137, SIGKILL"),
        (143, "exit 143, SIGTERM"),
        (139, "exit 139, SIGSEGV"),
        (1, "exit 1"),
        (None, "exit code unknown"),
    ],
)
def test_exit_codes_above_128_name_the_signal(code: int | None, words: str) -> None:
    assert describe_exit(code) == words


def test_a_pod_without_a_memory_limit_says_no_limit() -> None:
    death = one(pod(restarts=1, last=terminated("OOMKilled", 137), limit=None))
    assert death.memory_limit is None
    assert death.summary.endswith("in pod imports-runner-abc")

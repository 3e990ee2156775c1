"""Runner pods that die with jobs in flight: each job is recorded exactly once, with the cause the
pod's status gives, retried by policy, and shown as a Warning Event on the JobQueue.

The kubelet's reports are made by patching pod status through the API, as a kubelet does; the
runner containers are real ``sigrun work`` stand-ins carrying the pods' identities.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as raw_redis

from sigrun.runner import client
from sigrun.runner.jobs import Cause, Record
from sigrun.runner.redisio import SyncRedis
from tests.cluster.controlplane import Cluster
from tests.operator.standins import KubeletStandIn, RunnerStandIn, wait_for_file, wait_until_holding
from tests.operator.support import (
    JOBS,
    OperatorProcess,
    events,
    eventually,
    get_jobqueue,
    jobqueue,
    kubectl_apply,
    measure,
    runner_pods,
    wait_condition,
)

pytestmark = pytest.mark.cluster

Q = "imports"
HOLD = f"{JOBS}:hold"


@contextlib.contextmanager
def held_in_deletion(cluster: Cluster, namespace: str, name: str) -> Iterator[None]:
    """Keep a deleted pod object around while "the kubelet" works, as stopping containers do."""
    cluster.kubectl(
        "patch",
        "pod",
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"metadata": {"finalizers": ["sigrun.dev/test-hold"]}}',
    )
    try:
        yield
    finally:
        cluster.kubectl(
            "patch",
            "pod",
            name,
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"metadata": {"finalizers": null}}',
            check=False,
        )


def setup_queue(
    cluster: Cluster, namespace: str, redis_url: str, *, pods: int = 1, concurrency: int = 1
) -> list[dict[str, Any]]:
    """A JobQueue pinned at ``pods`` runner pods (no autoscaling in the way)."""
    kubectl_apply(
        cluster,
        namespace,
        jobqueue(
            "imports",
            redis_url,
            [Q],
            runner={"concurrency": concurrency, "resources": {"limits": {"memory": "512Mi"}}},
            scaling={"minReplicas": pods, "maxReplicas": pods, "cooldownSeconds": 600},
        ),
    )
    wait_condition(cluster, namespace, "imports", "Ready", "True")
    return eventually(
        lambda: (
            (found := runner_pods(cluster, namespace, "imports")) and len(found) == pods and found
        ),
        what=f"{pods} runner pod(s)",
    )


def history(redis: SyncRedis) -> list[Record]:
    return list(reversed(client.history(redis, Q)))


def job_hash(raw: raw_redis.Redis, job_id: str) -> dict[str, str]:
    return raw.hgetall(f"sigrun:{{{Q}}}:job:{job_id}")


def pending_payloads(raw: raw_redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(p) for p in raw.lrange(f"sigrun:{{{Q}}}:pending", 0, -1)]


def dirty_events(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return events(cluster, namespace, "imports", "DirtyExit")


def start_holding(
    pod: dict[str, Any],
    redis: SyncRedis,
    redis_url: str,
    tmp_path: Path,
    megabytes: list[int],
    *,
    name: str,
) -> tuple[RunnerStandIn, list[str], list[int], Path]:
    """A stand-in runner for ``pod`` holding one job per entry of ``megabytes``."""
    release = tmp_path / f"release-{name}"
    markers = [tmp_path / f"{name}-{i}" for i in range(len(megabytes))]
    ids = [
        client.enqueue(redis, Q, HOLD, str(marker), str(release), mb)
        for marker, mb in zip(markers, megabytes, strict=True)
    ]
    standin = RunnerStandIn(
        pod,
        redis_url=redis_url,
        queues=[Q],
        workdir=tmp_path,
        concurrency=len(megabytes),
        heartbeat_ttl=9,
    )
    pids = [int(wait_for_file(marker)) for marker in markers]
    return standin, ids, pids, release


@pytest.mark.timeout(180)
def test_whole_container_oom_records_each_job_once_and_spares_the_collateral(
    *,
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    redis_url: str,
    redis: SyncRedis,
    raw: raw_redis.Redis,
    tmp_path: Path,
) -> None:
    [pod] = setup_queue(cluster, namespace, redis_url, concurrency=3)
    kubelet = KubeletStandIn(cluster)
    kubelet.running(pod)
    standin, (big, small1, small2), pids, _ = start_holding(
        pod, redis, redis_url, tmp_path, [160, 1, 1], name="oom"
    )
    try:
        wait_until_holding(raw, 3)  # the heartbeat carries each child's memory
        message = standin.termination_message()
        assert set(json.loads(message)["jobs"]) == {big, small1, small2}

        standin.oom_kill(pids)  # the kernel kills the whole container: runner and children
        kubelet.oom_restart(pod, message)
        reaction = measure(lambda: dirty_events(cluster, namespace), what="a DirtyExit Event")
        print(f"\nOOM status patch -> DirtyExit Event: {reaction:.2f}s")
    finally:
        standin.stop()

    records = eventually(lambda: (r := history(redis)) and len(r) >= 3 and r, what="3 records")
    time.sleep(1)  # any duplicate would have landed by now
    records = history(redis)
    assert sorted(r.job_id for r in records) == sorted([big, small1, small2])
    assert {r.cause for r in records} == {Cause.OOM_KILLED}
    by_id = {r.job_id: r for r in records}
    culprit = by_id[big]
    assert not culprit.collateral
    assert culprit.message.startswith(
        f"runner container OOMKilled (exit 137, SIGKILL) in pod {pod['metadata']['name']}: "
        f"memory limit 512Mi; likely culprit: job {big} (rss "
    )
    assert f"collateral: {small1}, {small2}" in culprit.message or (
        f"collateral: {small2}, {small1}" in culprit.message
    )
    assert "retrying in 30s (attempt 2 of 3)" in culprit.message
    assert culprit.pod_uid == pod["metadata"]["uid"]
    for small in (small1, small2):
        assert by_id[small].collateral
        assert f"likely culprit: job {big}" in by_id[small].message
        assert "requeued: collateral of another job's OOM kill" in by_id[small].message

    # Retried by policy: the culprit spent an attempt and waits its backoff...
    assert job_hash(raw, big)["state"] == "retrying"
    # ...the collateral went straight back to the queue, attempt unspent.
    requeued = {p["id"]: p for p in pending_payloads(raw)}
    assert set(requeued) == {small1, small2}
    assert all(p["attempt"] == 1 for p in requeued.values())

    [event] = dirty_events(cluster, namespace)
    assert event["type"] == "Warning"
    assert event["count"] == 3
    assert (
        event["involvedObject"]["uid"]
        == get_jobqueue(cluster, namespace, "imports")["metadata"]["uid"]
    )
    described = cluster.kubectl("describe", "jobqueue", "imports", "-n", namespace).stdout
    assert "DirtyExit" in described and "OOMKilled" in described and "sigrun-operator" in described
    status = eventually(
        lambda: (
            (s := get_jobqueue(cluster, namespace, "imports")["status"]).get("dirtyExits") == 3
            and s
        ),
        what="status.dirtyExits == 3",
    )
    assert status["lastDirtyExit"]["cause"] == "OOMKilled"


@pytest.mark.timeout(120)
def test_an_evicted_pod_records_its_job_as_evicted_and_retries_it(
    *,
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    redis_url: str,
    redis: SyncRedis,
    raw: raw_redis.Redis,
    tmp_path: Path,
) -> None:
    [pod] = setup_queue(cluster, namespace, redis_url)
    kubelet = KubeletStandIn(cluster)
    kubelet.running(pod)
    standin, [job], pids, _ = start_holding(pod, redis, redis_url, tmp_path, [1], name="evict")
    try:
        message = standin.termination_message()
        standin.oom_kill(pids)  # a hard eviction: SIGKILL, no grace
        kubelet.evicted(pod, message)
        reaction = measure(lambda: dirty_events(cluster, namespace), what="a DirtyExit Event")
        print(f"\neviction status patch -> DirtyExit Event: {reaction:.2f}s")
    finally:
        standin.stop()

    [record] = history(redis)
    assert (record.job_id, record.cause, record.collateral) == (job, Cause.EVICTED, False)
    assert record.message.startswith(
        f"runner pod {pod['metadata']['name']} evicted (TerminationByKubelet: The node was low on "
        "resource: memory.) (container exit 137, SIGKILL)"
    )
    assert job_hash(raw, job)["state"] == "retrying"
    [event] = dirty_events(cluster, namespace)
    assert "Evicted" in event["message"] and HOLD in event["message"]


@pytest.mark.timeout(120)
def test_a_deleted_pod_killed_after_its_grace_period_records_its_job_as_deleted(
    *,
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    redis_url: str,
    redis: SyncRedis,
    tmp_path: Path,
) -> None:
    [pod] = setup_queue(cluster, namespace, redis_url)
    name = pod["metadata"]["name"]
    kubelet = KubeletStandIn(cluster)
    with held_in_deletion(cluster, namespace, name):
        kubelet.running(pod)
        standin, [job], pids, _ = start_holding(pod, redis, redis_url, tmp_path, [1], name="delete")
        try:
            cluster.kubectl("delete", "pod", name, "-n", namespace, "--wait=false")
            time.sleep(1)
            assert history(redis) == [], "a pod being deleted is not a death: the runner may drain"
            message = standin.termination_message()
            standin.oom_kill(pids)  # the grace period ran out: SIGKILL
            kubelet.killed_after_grace(pod, message)
            eventually(lambda: dirty_events(cluster, namespace), what="a DirtyExit Event")
        finally:
            standin.stop()

    [record] = history(redis)
    assert (record.job_id, record.cause) == (job, Cause.DELETED)
    assert "deleted; the runner was killed when the grace period ran out" in record.message


@pytest.mark.timeout(120)
def test_a_force_deleted_pod_is_recorded_once_its_runner_heartbeat_expires(
    *,
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    redis_url: str,
    redis: SyncRedis,
    tmp_path: Path,
) -> None:
    [pod] = setup_queue(cluster, namespace, redis_url)
    kubelet = KubeletStandIn(cluster)
    kubelet.running(pod)
    standin, [job], pids, _ = start_holding(pod, redis, redis_url, tmp_path, [1], name="force")
    try:
        standin.oom_kill(pids)  # the node is gone with it: no one reports the container
        cluster.kubectl(
            "delete", "pod", pod["metadata"]["name"], "-n", namespace, "--grace-period=0", "--force"
        )
        # Unconfirmed: recorded only after the runner's heartbeat (TTL 9s) has expired.
        waited = measure(lambda: history(redis), what="the job's record", timeout=40)
    finally:
        standin.stop()
    assert waited > 2
    [record] = history(redis)
    assert (record.job_id, record.cause) == (job, Cause.DELETED)
    assert "no report of its container" in record.message


@pytest.mark.timeout(120)
def test_a_runner_that_stops_heartbeating_in_a_healthy_pod_has_its_job_recorded_and_retried(
    *,
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    redis_url: str,
    redis: SyncRedis,
    raw: raw_redis.Redis,
    tmp_path: Path,
) -> None:
    # A hung runner: the pod still looks fine, so only the missing heartbeat tells, and no
    # other runner is there to reap it.
    [pod] = setup_queue(cluster, namespace, redis_url)
    KubeletStandIn(cluster).running(pod)
    standin, [job], _, _ = start_holding(pod, redis, redis_url, tmp_path, [1], name="hung")
    os.kill(standin.pid, signal.SIGSTOP)
    try:
        waited = measure(lambda: history(redis), what="the job's record", timeout=40)
        [record] = history(redis)
        assert (record.job_id, record.cause) == (job, Cause.RUNNER_LOST)
        assert "stopped sending heartbeats" in record.message
        assert job_hash(raw, job)["state"] == "retrying"  # retried, by policy
        [event] = eventually(lambda: dirty_events(cluster, namespace), what="the DirtyExit Event")
        assert "RunnerLost" in event["message"]
    finally:
        os.kill(standin.pid, signal.SIGCONT)
        standin.stop()
    assert 9 - 2 < waited < 9 + 5  # the heartbeat TTL, plus at most a tick or two


@pytest.mark.timeout(120)
def test_a_gracefully_deleted_pod_whose_runner_drained_records_nothing(
    *,
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    redis_url: str,
    redis: SyncRedis,
    raw: raw_redis.Redis,
    tmp_path: Path,
) -> None:
    [pod] = setup_queue(cluster, namespace, redis_url)
    name = pod["metadata"]["name"]
    kubelet = KubeletStandIn(cluster)
    with held_in_deletion(cluster, namespace, name):
        kubelet.running(pod)
        standin, [job], _, release = start_holding(
            pod, redis, redis_url, tmp_path, [1], name="drain"
        )
        try:
            cluster.kubectl("delete", "pod", name, "-n", namespace, "--wait=false")
            release.touch()  # the job finishes within the grace period
            assert standin.terminate() == 0
            kubelet.killed_after_grace(pod, standin.termination_message())
            # Exit 0 would be reported, but even a 137 after a full drain leaves no job behind.
            time.sleep(3)
        finally:
            standin.stop()
    assert history(redis) == []
    assert job_hash(raw, job)["state"] == "succeeded"
    assert dirty_events(cluster, namespace) == []


@pytest.mark.timeout(240)
def test_an_operator_restart_neither_repeats_nor_loses_a_dirty_exit(
    *,
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    redis_url: str,
    redis: SyncRedis,
    raw: raw_redis.Redis,
    tmp_path: Path,
) -> None:
    pod_a, pod_b = setup_queue(cluster, namespace, redis_url, pods=2, concurrency=2)
    kubelet = KubeletStandIn(cluster)
    kubelet.running(pod_a)
    kubelet.running(pod_b)

    # Pod A: a whole-container OOM kill while the operator runs.
    a, [oom_job], a_pids, _ = start_holding(pod_a, redis, redis_url, tmp_path, [1], name="a")
    b, [x_job, y_job], (x_pid, y_pid), _ = start_holding(
        pod_b, redis, redis_url, tmp_path, [1, 1], name="b"
    )
    try:
        message = a.termination_message()
        a.oom_kill(a_pids)
        kubelet.oom_restart(pod_a, message)
        eventually(lambda: dirty_events(cluster, namespace), what="the OOM's Event")
        operator.kill()  # at once: its status (history cursor) may not be written yet

        # While no operator runs: the runner itself records a child's death (SIGKILL)...
        os.kill(y_pid, signal.SIGKILL)
        eventually(
            lambda: any(r.job_id == y_job for r in history(redis)), what="the runner's record"
        )
        # ...and pod B is evicted with the other job.
        message = b.termination_message()
        b.oom_kill([x_pid])
        kubelet.evicted(pod_b, message)

        operator.start()
        eventually(
            lambda: (
                {
                    e["message"].split(")")[1].split(":")[0].strip()
                    for e in dirty_events(cluster, namespace)
                }
                >= {"OOMKilled", "Signal", "Evicted"}
            ),
            what="Events for all three deaths",
            timeout=60,
        )
        time.sleep(4)  # two more ticks: any repeat would show now
    finally:
        a.stop()
        b.stop()

    records = history(redis)
    assert sorted(r.job_id for r in records) == sorted([oom_job, x_job, y_job])
    assert {r.job_id: r.cause for r in records} == {
        oom_job: Cause.OOM_KILLED,
        y_job: Cause.SIGNAL,
        x_job: Cause.EVICTED,
    }
    counts = {
        e["message"].split(")")[1].split(":")[0].strip(): e["count"]
        for e in dirty_events(cluster, namespace)
    }
    assert counts == {"OOMKilled": 1, "Signal": 1, "Evicted": 1}
    status = eventually(
        lambda: (
            (s := get_jobqueue(cluster, namespace, "imports")["status"]).get("dirtyExits") == 3
            and s
        ),
        what="status.dirtyExits == 3",
    )
    assert status["lastDirtyExit"]["job"] in {x_job, y_job}
    assert operator.starts == 2

"""Autoscaling from Redis: a backlog scales runners up at once; a drained queue scales them
down after the cooldown, idle pods first (pod-deletion-cost), never below the busy ones.

Real operator, real Redis, real ReplicaSet controller; runner pods are played by real
``sigrun work`` stand-ins carrying the pods' identities (no kubelet runs here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis as raw_redis

from sigrun.runner import client
from sigrun.runner.redisio import SyncRedis
from tests.cluster.controlplane import Cluster
from tests.operator.standins import RunnerStandIn, wait_for_file
from tests.operator.support import (
    JOBS,
    OperatorProcess,
    events,
    eventually,
    get_deployment,
    get_jobqueue,
    jobqueue,
    kubectl_apply,
    measure,
    runner_pods,
    wait_condition,
)

pytestmark = pytest.mark.cluster

Q = "imports"
COST = "controller.kubernetes.io/pod-deletion-cost"


def pods_when(cluster: Cluster, namespace: str, count: int) -> list[dict[str, Any]] | None:
    pods = runner_pods(cluster, namespace, "imports")
    return pods if len(pods) == count else None


def replicas(cluster: Cluster, namespace: str) -> int:
    deployment = get_deployment(cluster, namespace, "imports-runner") or {}
    return int(deployment.get("spec", {}).get("replicas", -1))


@pytest.mark.timeout(240)
def test_backlog_scales_up_and_a_drained_queue_scales_down_idle_pods_first(
    *,
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    redis_url: str,
    redis: SyncRedis,
    raw: raw_redis.Redis,
    tmp_path: Path,
) -> None:
    kubectl_apply(
        cluster,
        namespace,
        jobqueue(
            "imports",
            redis_url,
            [Q],
            scaling={
                "minReplicas": 0,
                "maxReplicas": 12,
                "jobsPerReplica": 10,
                "cooldownSeconds": 3,
            },
        ),
    )
    wait_condition(cluster, namespace, "imports", "Ready", "True")
    assert replicas(cluster, namespace) == 0

    # Two long jobs first (runners take the oldest first), then 98 quick ones: 100 in all.
    release = tmp_path / "release"
    markers = [tmp_path / f"held-{i}" for i in range(2)]
    for marker in markers:
        client.enqueue(redis, Q, f"{JOBS}:hold", str(marker), str(release))
    for _ in range(98):
        client.enqueue(redis, Q, f"{JOBS}:noop")

    scale_up = measure(lambda: replicas(cluster, namespace) == 10, what="10 replicas for 100 jobs")
    print(f"\nbacklog of 100 -> Deployment at 10 replicas: {scale_up:.2f}s")
    assert scale_up < 10
    eventually(
        lambda: get_jobqueue(cluster, namespace, "imports")["status"]["replicas"]["desired"] == 10,
        what="status.replicas.desired to say 10",
    )
    pods = eventually(
        lambda: pods_when(cluster, namespace, 10),
        what="10 runner pods",
    )

    # Two pods get a runner (stand-ins with the pods' identities), each holding a long job.
    busy_pods, idle_pods = pods[:2], pods[2:]
    standins = [
        RunnerStandIn(pod, redis_url=redis_url, queues=[Q], workdir=tmp_path) for pod in busy_pods
    ]
    try:
        for marker in markers:
            wait_for_file(marker)
        # Drain the queue: the 98 quick jobs go away; 2 jobs stay in flight.
        raw.delete(f"sigrun:{{{Q}}}:pending")

        eventually(
            lambda: replicas(cluster, namespace) == 2, what="scale-down to the 2 busy runners"
        )
        by_uid = {p["metadata"]["uid"]: p for p in pods}
        costs = {
            uid: cluster.rest()
            .request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}")[
                "metadata"
            ]
            .get("annotations", {})
            .get(COST)
            for uid, pod in by_uid.items()
            if pod in busy_pods
        }
        assert costs == {p["metadata"]["uid"]: "1001" for p in busy_pods}
        # The ReplicaSet deleted the idle pods and kept the busy ones.
        left = eventually(
            lambda: pods_when(cluster, namespace, 2),
            what="the idle pods to be deleted",
        )
        assert {p["metadata"]["uid"] for p in left} == {p["metadata"]["uid"] for p in busy_pods}
        assert all(
            p["metadata"]["uid"] not in {q["metadata"]["uid"] for q in left} for p in idle_pods
        )
        scaling = get_jobqueue(cluster, namespace, "imports")["status"]["conditions"]
        [cond] = [c for c in scaling if c["type"] == "Scaling"]
        assert cond["reason"] == "KeptForBusyRunners", cond
        assert "2 runner(s) hold" in cond["message"]

        # The long jobs finish: the queue is idle; after the cooldown, zero runners.
        release.touch()
        eventually(lambda: replicas(cluster, namespace) == 0, what="scale to zero when idle")
    finally:
        for standin in standins:
            standin.stop()

    scaled = {
        e["message"].split(":")[0]: e for e in events(cluster, namespace, "imports", "Scaled")
    }
    assert all(e["type"] == "Normal" for e in scaled.values())
    up = scaled["Scaled runners up from 0 to 10"]
    assert up["count"] == 1
    # Both steps down are counted on one Event, which shows the latest.
    [down] = [e for key, e in scaled.items() if key.startswith("Scaled runners down")]
    assert down["count"] == 2
    assert down["message"].startswith("Scaled runners down from 2 to 0")

"""Controllers and the scheduler really run: Deployments, ReplicaSets, Pods bound to the node.

Why: the operator scales worker Deployments and reads their Pods; that needs the real
kube-controller-manager (deployment and replicaset controllers, garbage collector) and
kube-scheduler. No kubelet runs, so Pods are bound (spec.nodeName) but stay Pending.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from kubernetes import client

from tests.cluster.controlplane import Cluster, wait_for

pytestmark = pytest.mark.cluster


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        # Never pulled: no kubelet runs here.
                        {"name": "worker", "image": "registry.invalid/sigrun/worker:test"}
                    ]
                },
            },
        },
    }


def _live_pods(core: Any, namespace: str, app: str) -> list[Any]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [pod for pod in pods if pod.metadata.deletion_timestamp is None]


def _bound(core: Any, namespace: str, app: str, count: int) -> list[Any] | None:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    if len(pods) == count and all(pod.spec.node_name for pod in pods):
        return list(pods)
    return None


def test_deployment_creates_a_replicaset_and_pods_bound_to_the_node(
    cluster: Cluster, api_client: client.ApiClient, namespace: str
) -> None:
    apps: Any = client.AppsV1Api(api_client)
    core: Any = client.CoreV1Api(api_client)
    deployment = apps.create_namespaced_deployment(namespace, _deployment("web", replicas=2))

    replicasets = wait_for(
        lambda: apps.list_namespaced_replica_set(namespace, label_selector="app=web").items or None,
        what="the deployment controller to create a ReplicaSet",
    )
    assert len(replicasets) == 1
    [owner] = replicasets[0].metadata.owner_references
    assert (owner.kind, owner.uid) == ("Deployment", deployment.metadata.uid)

    pods = wait_for(lambda: _bound(core, namespace, "web", 2), what="2 pods bound to the node")
    assert {pod.spec.node_name for pod in pods} == {cluster.node_name}
    for pod in pods:
        [pod_owner] = pod.metadata.owner_references
        assert (pod_owner.kind, pod_owner.uid) == ("ReplicaSet", replicasets[0].metadata.uid)
        # The scheduler, not us, bound it: it says so in the PodScheduled condition.
        scheduled = [c for c in pod.status.conditions or [] if c.type == "PodScheduled"]
        assert [c.status for c in scheduled] == ["True"]


def test_scaling_a_deployment_changes_the_number_of_pods(
    api_client: client.ApiClient, namespace: str
) -> None:
    apps: Any = client.AppsV1Api(api_client)
    core: Any = client.CoreV1Api(api_client)
    apps.create_namespaced_deployment(namespace, _deployment("scaled", replicas=1))
    wait_for(lambda: _bound(core, namespace, "scaled", 1), what="1 bound pod")

    apps.patch_namespaced_deployment_scale("scaled", namespace, {"spec": {"replicas": 4}})
    wait_for(lambda: _bound(core, namespace, "scaled", 4), what="4 bound pods after scale-up")

    apps.patch_namespaced_deployment_scale("scaled", namespace, {"spec": {"replicas": 2}})
    # The node agent completes the deletions a kubelet would, so the extra pods go away.
    pods = wait_for(lambda: _bound(core, namespace, "scaled", 2), what="2 pods after scale-down")
    assert len(_live_pods(core, namespace, "scaled")) == 2
    assert len(pods) == 2


def test_event_from_the_python_client_shows_in_kubectl_describe(
    cluster: Cluster, api_client: client.ApiClient, namespace: str
) -> None:
    core: Any = client.CoreV1Api(api_client)
    pod = core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "job-runner"},
            "spec": {"containers": [{"name": "w", "image": "registry.invalid/sigrun/w:test"}]},
        },
    )
    now = dt.datetime.now(dt.UTC)
    message = "job 42 died: OOMKilled (exit 137) while running sigrun.example:crunch"
    core.create_namespaced_event(
        namespace,
        {
            "metadata": {"generateName": "job-runner."},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod.metadata.name,
                "namespace": namespace,
                "uid": pod.metadata.uid,
            },
            "reason": "DirtyExit",
            "message": message,
            "type": "Warning",
            "source": {"component": "sigrun-operator"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        },
    )

    described = cluster.kubectl("describe", "pod", "job-runner", "-n", namespace).stdout
    events = described.split("Events:", 1)[1]
    [line] = [line for line in events.splitlines() if "DirtyExit" in line]
    assert "Warning" in line
    assert "sigrun-operator" in line
    assert message in line

"""A JobQueue applied with kubectl becomes a runner Deployment; edits roll it; delete removes it.

Real API server, controllers and garbage collector; the real ``sigrun operator`` process.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
import redis as raw_redis

from tests.cluster.controlplane import Cluster
from tests.operator.support import (
    OperatorProcess,
    condition,
    events,
    eventually,
    get_deployment,
    get_jobqueue,
    jobqueue,
    kubectl_apply,
    wait_condition,
)

pytestmark = pytest.mark.cluster


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_applying_a_jobqueue_creates_its_runner_deployment(
    *, cluster: Cluster, namespace: str, operator: OperatorProcess, redis_url: str
) -> None:
    manifest = jobqueue(
        "imports",
        redis_url,
        ["my_import"],
        runner={"concurrency": 4, "resources": {"limits": {"memory": "512Mi"}}, "graceSeconds": 60},
        scaling={"minReplicas": 1},
    )
    kubectl_apply(cluster, namespace, manifest)

    deployment = eventually(
        lambda: get_deployment(cluster, namespace, "imports-runner"), what="the runner Deployment"
    )
    jq = get_jobqueue(cluster, namespace, "imports")
    [owner] = deployment["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "JobQueue",
        "imports",
        jq["metadata"]["uid"],
        True,
    )
    assert deployment["spec"]["replicas"] == 1  # minReplicas
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["sigrun", "work"]
    assert container["image"] == "registry.invalid/sigrun:test"
    assert container["resources"]["limits"]["memory"] == "512Mi"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert pod["terminationGracePeriodSeconds"] == 75
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = env_of(deployment)
    assert env["SIGRUN_QUEUES"] == "my_import"
    assert env["SIGRUN_CONCURRENCY"] == "4"
    assert env["SIGRUN_POD_UID"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.uid"}}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "sigrun-runner"
    assert labels["sigrun.dev/jobqueue"] == "imports"

    ready = wait_condition(cluster, namespace, "imports", "Ready", "True")
    assert ready["reason"] == "Reconciled"
    # The pods exist (ReplicaSet controller) even though no kubelet runs them.
    eventually(
        lambda: (
            cluster.kubectl(
                "get", "pods", "-n", namespace, "-l", "sigrun.dev/jobqueue=imports", "-o", "name"
            ).stdout.strip()
            or None
        ),
        what="a runner pod",
    )


def test_changing_the_spec_rolls_the_deployment(
    *, cluster: Cluster, namespace: str, operator: OperatorProcess, redis_url: str
) -> None:
    kubectl_apply(cluster, namespace, jobqueue("imports", redis_url, ["my_import"]))
    first = eventually(
        lambda: get_deployment(cluster, namespace, "imports-runner"), what="Deployment"
    )

    cluster.kubectl(
        "patch",
        "jobqueue",
        "imports",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"queues": ["my_import", "urgent"], "runner": {"concurrency": 8}}}',
    )

    def rolled() -> dict[str, Any] | None:
        d = get_deployment(cluster, namespace, "imports-runner")
        return d if d and env_of(d)["SIGRUN_CONCURRENCY"] == "8" else None

    second = eventually(rolled, what="the Deployment to carry the new spec")
    assert env_of(second)["SIGRUN_QUEUES"] == "my_import,urgent"
    assert second["metadata"]["generation"] > first["metadata"]["generation"]
    assert second["metadata"]["uid"] == first["metadata"]["uid"]  # patched, not replaced
    jq = eventually(
        lambda: (
            (j := get_jobqueue(cluster, namespace, "imports"))["status"].get("observedGeneration")
            == j["metadata"]["generation"]
            and j
        ),
        what="observedGeneration to catch up",
    )
    assert condition(jq, "Ready") is not None


def test_a_hand_edit_of_the_deployment_is_undone(
    *, cluster: Cluster, namespace: str, operator: OperatorProcess, redis_url: str
) -> None:
    kubectl_apply(cluster, namespace, jobqueue("imports", redis_url, ["my_import"]))
    eventually(lambda: get_deployment(cluster, namespace, "imports-runner"), what="Deployment")
    cluster.kubectl(
        "set", "env", "deployment/imports-runner", "-n", namespace, "SIGRUN_QUEUES=other"
    )
    # Undone at the next tick: the Deployment's generation is not the one the operator wrote.
    eventually(
        lambda: (
            env_of(get_deployment(cluster, namespace, "imports-runner") or {})["SIGRUN_QUEUES"]
            == "my_import"
        ),
        what="the operator to restore its Deployment",
    )


def test_deleting_the_jobqueue_removes_its_deployment(
    *, cluster: Cluster, namespace: str, operator: OperatorProcess, redis_url: str
) -> None:
    kubectl_apply(cluster, namespace, jobqueue("imports", redis_url, ["my_import"]))
    eventually(lambda: get_deployment(cluster, namespace, "imports-runner"), what="Deployment")

    cluster.kubectl(
        "delete", "jobqueue", "imports", "-n", namespace, "--wait=true", "--timeout=10s"
    )

    # The garbage collector in kube-controller-manager follows the owner reference.
    eventually(
        lambda: get_deployment(cluster, namespace, "imports-runner") is None,
        what="the garbage collector to delete the Deployment",
    )


def test_a_missing_redis_secret_is_not_ready_with_an_event_until_it_exists(
    *,
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    redis_url: str,
    raw: raw_redis.Redis,
) -> None:
    # A Redis that needs a password: an ACL user on the session's server.
    raw.acl_setuser(
        "sigrun-test",
        enabled=True,
        passwords=["+s3cret"],
        keys=["*"],
        channels=["*"],
        commands=["+@all"],
    )
    url = redis_url.replace("redis://", "redis://sigrun-test@")
    kubectl_apply(
        cluster,
        namespace,
        jobqueue(
            "imports", url, ["my_import"], redis={"passwordSecretRef": {"name": "redis-auth"}}
        ),
    )

    broken = wait_condition(cluster, namespace, "imports", "Ready", "False")
    assert broken["reason"] == "SecretNotFound"
    assert "Secret redis-auth" in broken["message"]
    assert f"namespace {namespace}" in broken["message"]
    [warning] = eventually(
        lambda: events(cluster, namespace, "imports", "SecretNotFound") or None,
        what="a SecretNotFound Event",
    )
    assert warning["type"] == "Warning"
    assert warning["source"]["component"] == "sigrun-operator"
    # The runner Deployment exists anyway, with the password wired from the Secret.
    deployment = get_deployment(cluster, namespace, "imports-runner")
    assert deployment is not None
    assert env_of(deployment)["SIGRUN_REDIS_PASSWORD"] == {
        "secretKeyRef": {"name": "redis-auth", "key": "password"}
    }
    # No crash loop: the operator keeps running and logs no error (every line is JSON).
    assert operator.process is not None and operator.process.poll() is None
    assert not [line for line in operator.lines() if line["level"] in ("error", "critical")]

    cluster.rest().request(
        "POST",
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "redis-auth"},
            "data": {"password": base64.b64encode(b"s3cret").decode()},
        },
    )
    ready = wait_condition(cluster, namespace, "imports", "Ready", "True")
    assert ready["reason"] == "Reconciled"
    assert [e["count"] for e in events(cluster, namespace, "imports", "SecretNotFound")] == [1]
    assert events(cluster, namespace, "imports", "Ready"), "a Normal event says it recovered"


def test_a_wrong_password_is_not_ready_and_says_redis_refused(
    *,
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    redis_url: str,
    raw: raw_redis.Redis,
) -> None:
    raw.acl_setuser(
        "sigrun-test",
        enabled=True,
        passwords=["+s3cret"],
        keys=["*"],
        channels=["*"],
        commands=["+@all"],
    )
    cluster.rest().request(
        "POST",
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "redis-auth"},
            "data": {"password": base64.b64encode(b"wrong").decode()},
        },
    )
    url = redis_url.replace("redis://", "redis://sigrun-test@")
    kubectl_apply(
        cluster,
        namespace,
        jobqueue(
            "imports", url, ["my_import"], redis={"passwordSecretRef": {"name": "redis-auth"}}
        ),
    )
    broken = wait_condition(cluster, namespace, "imports", "Ready", "False")
    assert broken["reason"] == "RedisAuthFailed"
    assert "s3cret" not in broken["message"] and "wrong" not in broken["message"]


def test_an_unreachable_redis_is_not_ready_and_the_operator_keeps_running(
    *, cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    kubectl_apply(cluster, namespace, jobqueue("imports", "redis://127.0.0.1:1/0", ["my_import"]))
    broken = wait_condition(cluster, namespace, "imports", "Ready", "False")
    assert broken["reason"] == "RedisUnreachable"
    assert "127.0.0.1:1" in broken["message"]
    scaling = condition(get_jobqueue(cluster, namespace, "imports"), "Scaling")
    assert scaling is not None and scaling["status"] == "False"
    assert operator.process is not None and operator.process.poll() is None


def test_an_empty_image_without_an_operator_default_is_not_ready_until_one_is_set(
    cluster: Cluster, namespace: str, operator: OperatorProcess, redis_url: str
) -> None:
    manifest = jobqueue("imports", redis_url, ["my_import"])
    del manifest["spec"]["runner"]["image"]
    kubectl_apply(cluster, namespace, manifest)
    broken = wait_condition(cluster, namespace, "imports", "Ready", "False")
    assert broken["reason"] == "ImageMissing"
    assert get_deployment(cluster, namespace, "imports-runner") is None
    [warning] = eventually(
        lambda: events(cluster, namespace, "imports", "ImageMissing"), what="an ImageMissing Event"
    )
    assert "spec.runner.image is empty" in warning["message"]

    cluster.kubectl(
        "patch",
        "jobqueue",
        "imports",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"runner": {"image": "registry.invalid/sigrun:fixed"}}}',
    )
    wait_condition(cluster, namespace, "imports", "Ready", "True")
    deployment = get_deployment(cluster, namespace, "imports-runner")
    assert deployment is not None
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.invalid/sigrun:fixed"


def test_the_operator_logs_one_json_object_a_line_naming_the_object(
    cluster: Cluster, namespace: str, operator: OperatorProcess, redis_url: str
) -> None:
    kubectl_apply(cluster, namespace, jobqueue("imports", redis_url, ["my_import"]))
    wait_condition(cluster, namespace, "imports", "Ready", "True")
    lines = operator.lines()  # raises if any line is not one JSON object
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(
        line.get("object") == f"{namespace}/imports" and "deployment" in line["message"]
        for line in lines
    ), lines

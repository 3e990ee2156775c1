"""The runner Deployment built from a JobQueue spec: a table of what each field becomes."""

from __future__ import annotations

from typing import Any

import pytest

from sigrun.operator.deployment import runner_deployment, spec_hash
from sigrun.operator.spec import JobQueueSpec, QueueRef, SpecError, parse_spec

REF = QueueRef(namespace="team-a", name="imports", uid="0b5d-uid")

BASE: dict[str, Any] = {
    "queues": ["my_import", "slow"],
    "redis": {"url": "redis://redis:6379/0", "passwordSecretRef": {"name": "redis", "key": "pw"}},
    "runner": {
        "image": "registry.example/sigrun:0.1.0",
        "concurrency": 4,
        "resources": {"limits": {"memory": "512Mi"}, "requests": {"cpu": "250m"}},
        "allowedModules": ["jobs.", "tasks.etl"],
        "graceSeconds": 120,
        "timeoutSeconds": 3600,
        "env": [
            {"name": "TZ", "value": "UTC"},
            {"name": "DB_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
        ],
    },
    "scaling": {"minReplicas": 1, "maxReplicas": 12, "jobsPerReplica": 10, "cooldownSeconds": 60},
    "retry": {"backoffSeconds": 15},
}


def build(spec: dict[str, Any] | None = None, replicas: int = 3) -> dict[str, Any]:
    parsed = parse_spec(spec or BASE)
    return runner_deployment(
        REF, parsed, image=parsed.runner.image or "default:1", replicas=replicas
    )


def container(body: dict[str, Any]) -> dict[str, Any]:
    [only] = body["spec"]["template"]["spec"]["containers"]
    return only


def env(body: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(body)["env"]}


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("SIGRUN_REDIS_URL", "redis://redis:6379/0"),
        ("SIGRUN_QUEUES", "my_import,slow"),
        ("SIGRUN_CONCURRENCY", "4"),
        ("SIGRUN_ALLOW_MODULES", "jobs.,tasks.etl"),
        ("SIGRUN_GRACE_SECONDS", "120"),
        ("SIGRUN_JOB_TIMEOUT", "3600"),
        ("SIGRUN_BACKOFF_SECONDS", "15"),
        ("SIGRUN_HEARTBEAT_TTL", "30"),
        ("SIGRUN_PRELOAD", "1"),
        ("SIGRUN_PREFIX", "sigrun:"),
        ("SIGRUN_TERMINATION_LOG", "/dev/termination-log"),
        ("SIGRUN_LOG_FORMAT", "json"),
        ("SIGRUN_REDIS_PASSWORD", {"secretKeyRef": {"name": "redis", "key": "pw"}}),
        ("SIGRUN_POD_NAME", {"fieldRef": {"fieldPath": "metadata.name"}}),
        ("SIGRUN_POD_UID", {"fieldRef": {"fieldPath": "metadata.uid"}}),
        ("SIGRUN_POD_NAMESPACE", {"fieldRef": {"fieldPath": "metadata.namespace"}}),
        ("TZ", "UTC"),
        ("DB_URL", {"secretKeyRef": {"name": "db", "key": "url"}}),
    ],
)
def test_runner_environment(name: str, want: object) -> None:
    assert env(build())[name] == want


def test_the_password_never_appears_as_a_plain_value() -> None:
    body = build()
    assert all("value" not in e for e in container(body)["env"] if "PASSWORD" in e["name"])


def test_no_password_ref_means_no_password_variable() -> None:
    spec = {**BASE, "redis": {"url": "redis://redis:6379/0"}}
    assert "SIGRUN_REDIS_PASSWORD" not in env(build(spec))


def test_no_timeout_means_no_timeout_variable() -> None:
    runner = {k: v for k, v in BASE["runner"].items() if k != "timeoutSeconds"}
    assert "SIGRUN_JOB_TIMEOUT" not in env(build({**BASE, "runner": runner}))


def test_preload_off_reaches_the_runner() -> None:
    runner = {**BASE["runner"], "preload": False}
    assert env(build({**BASE, "runner": runner}))["SIGRUN_PRELOAD"] == "0"


def test_container_runs_sigrun_work_with_the_image_and_resources() -> None:
    c = container(build())
    assert c["name"] == "runner"
    assert c["command"] == ["sigrun", "work"]
    assert c["image"] == "registry.example/sigrun:0.1.0"
    assert c["resources"] == {"limits": {"memory": "512Mi"}, "requests": {"cpu": "250m"}}
    assert (c["terminationMessagePath"], c["terminationMessagePolicy"]) == (
        "/dev/termination-log",
        "File",
    )


def test_security_context_is_restricted_and_non_root() -> None:
    body = build()
    pod = body["spec"]["template"]["spec"]
    c = container(body)
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]


@pytest.mark.parametrize(
    ("runner", "grace"),
    [
        ({"graceSeconds": 120}, 135),
        ({"graceSeconds": 0}, 15),
        ({"graceSeconds": 30, "terminationGracePeriodSeconds": 600}, 600),
    ],
)
def test_pod_grace_period_outlasts_the_runner_grace(runner: dict[str, Any], grace: int) -> None:
    spec = {**BASE, "runner": {**BASE["runner"], **runner}}
    body = build(spec)
    assert body["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == grace


def test_labels_select_the_runner_pods_of_this_jobqueue() -> None:
    body = build()
    selector = body["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "sigrun-runner", "sigrun.dev/jobqueue": "imports"}
    labels = body["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def test_owned_by_the_jobqueue_so_it_is_garbage_collected_with_it() -> None:
    [owner] = build()["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "sigrun.dev/v1alpha1",
        "kind": "JobQueue",
        "name": "imports",
        "uid": "0b5d-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_name_namespace_and_replicas_come_from_the_caller() -> None:
    body = build(replicas=7)
    assert (body["metadata"]["name"], body["metadata"]["namespace"]) == ("imports-runner", "team-a")
    assert body["spec"]["replicas"] == 7


def test_fingerprint_ignores_replicas_but_not_the_spec() -> None:
    a, b = build(replicas=1), build(replicas=9)
    assert a["metadata"]["annotations"] == b["metadata"]["annotations"]
    changed = build({**BASE, "runner": {**BASE["runner"], "concurrency": 5}})
    assert changed["metadata"]["annotations"] != a["metadata"]["annotations"]
    assert spec_hash(a) == a["metadata"]["annotations"]["sigrun.dev/spec-hash"]


def test_empty_image_falls_back_to_the_operators_default() -> None:
    runner = {k: v for k, v in BASE["runner"].items() if k != "image"}
    assert container(build({**BASE, "runner": runner}))["image"] == "default:1"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"queues": []}, "spec.queues must name at least one queue"),
        ({"queues": ["a{b}"]}, "must not contain braces"),
        ({"scaling": {"minReplicas": 5, "maxReplicas": 2}}, "minReplicas must not be greater"),
        (
            {"runner": {"allowedModules": ["jobs."], "concurrency": 0}},
            "concurrency must be at least 1",
        ),
        ({"runner": {"allowedModules": []}}, "allowedModules must name at least one"),
        (
            {"runner": {"allowedModules": ["j."], "env": [{"name": "SIGRUN_QUEUES"}]}},
            "set by the operator",
        ),
        (
            {
                "runner": {
                    "allowedModules": ["j."],
                    "graceSeconds": 60,
                    "terminationGracePeriodSeconds": 30,
                }
            },
            "must be greater than graceSeconds",
        ),
    ],
)
def test_specs_that_cannot_work_are_refused_with_the_field_named(
    patch: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec({**BASE, **patch})


def test_defaults_match_the_crd() -> None:
    spec: JobQueueSpec = parse_spec(
        {"queues": ["q"], "redis": {"url": "redis://r"}, "runner": {"allowedModules": ["jobs."]}}
    )
    assert (
        spec.runner.concurrency,
        spec.runner.grace_seconds,
        spec.runner.heartbeat_ttl_seconds,
    ) == (1, 30, 30)
    assert (spec.scaling.min_replicas, spec.scaling.max_replicas) == (0, 10)
    assert (spec.scaling.jobs_per_replica, spec.scaling.cooldown_seconds) == (10, 60)
    assert spec.retry.backoff_seconds == 10.0
    assert spec.redis.prefix == "sigrun:"

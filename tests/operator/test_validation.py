"""The API server itself refuses JobQueues that cannot work, and says why (CRD schema + CEL).

No operator runs here: these are the CRD's own checks, applied with kubectl as a user would.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests.cluster.controlplane import Cluster
from tests.conftest import REPO
from tests.operator.support import get_jobqueue, jobqueue

pytestmark = pytest.mark.cluster

GOOD = jobqueue("imports", "redis://redis:6379/0", ["my_import"])


def apply(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> tuple[int, str]:
    done = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), check=False
    )
    return done.returncode, done.stderr


def variant(path: list[str], value: object) -> dict[str, Any]:
    manifest = copy.deepcopy(GOOD)
    node = manifest["spec"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return manifest


def test_a_valid_jobqueue_is_accepted_with_defaults_filled_in(
    *, cluster: Cluster, crd: str, namespace: str
) -> None:
    code, err = apply(cluster, namespace, GOOD)
    assert code == 0, err
    spec = get_jobqueue(cluster, namespace, "imports")["spec"]
    assert spec["runner"]["concurrency"] == 1
    assert spec["runner"]["graceSeconds"] == 30
    assert spec["redis"]["prefix"] == "sigrun:"


def test_a_misspelled_field_is_rejected_by_name(cluster: Cluster, crd: str, namespace: str) -> None:
    manifest = copy.deepcopy(GOOD)
    manifest["spec"]["runner"]["concurency"] = 4
    code, err = apply(cluster, namespace, manifest)
    assert code != 0
    assert 'unknown field "spec.runner.concurency"' in err


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ["scaling"],
            {"minReplicas": 5, "maxReplicas": 2},
            'spec.scaling: Invalid value: "object": scaling.minReplicas must be less than or '
            "equal to scaling.maxReplicas",
        ),
        (
            ["runner", "concurrency"],
            -1,
            "spec.runner.concurrency: Invalid value: -1: spec.runner.concurrency in body should "
            "be greater than or equal to 1",
        ),
        (
            ["queues"],
            [],
            "spec.queues: Invalid value: 0: spec.queues in body should have at least 1 items",
        ),
        (["queues"], ["a,b"], "spec.queues[0] in body should match"),
        (
            ["runner", "allowedModules"],
            ["jobs;rm"],
            "spec.runner.allowedModules[0] in body should match",
        ),
        (
            ["runner", "imagePullPolicy"],
            "Sometimes",
            'supported values: "Always", "IfNotPresent", "Never"',
        ),
        (
            ["redis", "url"],
            "http://redis:6379",
            "spec.redis.url in body should match '^(redis|rediss|unix)://'",
        ),
        (["redis", "url"], "redis://:hunter2@redis:6379/0", "redis.url must not carry a password"),
        (
            ["runner", "terminationGracePeriodSeconds"],
            10,
            "runner.terminationGracePeriodSeconds must be greater than runner.graceSeconds",
        ),
        (
            ["runner", "env"],
            [{"name": "SIGRUN_QUEUES", "value": "x"}],
            "env names starting with SIGRUN_ are set by the operator",
        ),
        (["runner", "env"], [{"name": "TZ"}], "set exactly one of value and valueFrom"),
        (
            ["scaling", "jobsPerReplica"],
            0,
            "spec.scaling.jobsPerReplica in body should be greater than or equal to 1",
        ),
    ],
)
def test_a_spec_that_cannot_work_is_rejected_with_a_clear_message(
    *, cluster: Cluster, crd: str, namespace: str, path: list[str], value: object, message: str
) -> None:
    code, err = apply(cluster, namespace, variant(path, value))
    assert code != 0
    assert message in err, err


def test_a_name_too_long_for_a_label_is_rejected(
    *, cluster: Cluster, crd: str, namespace: str
) -> None:
    manifest = copy.deepcopy(GOOD)
    manifest["metadata"]["name"] = "q" * 64
    code, err = apply(cluster, namespace, manifest)
    assert code != 0
    assert "metadata.name must be at most 63 characters" in err


def test_kubectl_get_shows_the_printer_columns(cluster: Cluster, crd: str, namespace: str) -> None:
    apply(cluster, namespace, GOOD)
    header = cluster.kubectl("get", "jq", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "PENDING", "RUNNING", "FAILED", "DIRTYEXITS", "REPLICAS", "AGE"]
    wide = cluster.kubectl("get", "jobqueues", "-n", namespace, "-o", "wide").stdout.split()
    assert {"READY", "REASON"} <= set(wide)


def test_the_example_jobqueue_is_valid(cluster: Cluster, crd: str, namespace: str) -> None:
    example = REPO / "examples" / "jobqueue.yaml"
    done = cluster.kubectl("apply", "-n", namespace, "--dry-run=server", "-f", str(example))
    assert "jobqueue.sigrun.dev/imports created (server dry run)" in done.stdout

"""The Helm chart: lint, render, values schema, and a real install whose RBAC is enough to run
the operator (and no more), checked with the chart's own ServiceAccount token.
"""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sigrun.runner import client
from sigrun.runner.redisio import SyncRedis
from tests.cluster.controlplane import Cluster, ControlPlaneError
from tests.conftest import REPO
from tests.operator.support import (
    CRD_FILE,
    OperatorProcess,
    eventually,
    get_deployment,
    jobqueue,
    kubectl_apply,
    wait_condition,
)

pytestmark = pytest.mark.cluster

CHART = REPO / "charts" / "sigrun"


def render(cluster: Cluster, *sets: str, namespace: str = "sigrun-system") -> list[dict[str, Any]]:
    args = ["template", "rel", str(CHART), "--namespace", namespace]
    for value in sets:
        args += ["--set", value]
    return [doc for doc in yaml.safe_load_all(cluster.helm(*args).stdout) if doc]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    return doc


def test_helm_lint_strict_is_clean(cluster: Cluster) -> None:
    done = cluster.helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in done.stdout
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout


def test_default_render_is_crd_cluster_rbac_and_one_recreate_operator(cluster: Cluster) -> None:
    docs = render(cluster)
    assert kinds(docs) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "ServiceAccount",
    ]
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "rel-sigrun"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    assert container["command"] == ["sigrun", "operator"]
    assert container["image"] == "ghcr.io/sigrun-dev/sigrun:0.1.0"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SIGRUN_WATCH_NAMESPACES"] == ""
    assert env["SIGRUN_RUNNER_IMAGE"] == "ghcr.io/sigrun-dev/sigrun:0.1.0"
    assert env["SIGRUN_LOG_FORMAT"] == "json"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_cluster_role_grants_only_what_the_operator_uses(cluster: Cluster) -> None:
    rules = one(render(cluster), "ClusterRole")["rules"]
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert not any("*" in item for item in granted)
    assert ("", "secrets", "get") in granted
    assert not {("", "secrets", v) for v in ("list", "watch", "create", "update")} & granted
    assert ("", "pods", "patch") in granted
    assert not {("", "pods", v) for v in ("create", "delete", "update")} & granted
    assert ("sigrun.dev", "jobqueues/status", "patch") in granted
    assert ("apps", "deployments", "create") in granted
    assert ("", "events", "create") in granted and ("", "events", "patch") in granted


def test_watch_namespaces_renders_a_role_per_namespace_and_nothing_cluster_wide(
    cluster: Cluster,
) -> None:
    docs = render(cluster, "operator.watchNamespaces={team-a,team-b}")
    assert "ClusterRole" not in kinds(docs) and "ClusterRoleBinding" not in kinds(docs)
    roles = [d for d in docs if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for binding in (d for d in docs if d["kind"] == "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "rel-sigrun", "namespace": "sigrun-system"}
        ]
    [container] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SIGRUN_WATCH_NAMESPACES"] == "team-a,team-b"


def test_the_crd_in_the_chart_is_the_crd_file_kept_on_uninstall(cluster: Cluster) -> None:
    crd = one(render(cluster), "CustomResourceDefinition")
    assert crd == yaml.safe_load(CRD_FILE.read_text())
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_crds_install_false_leaves_the_crd_out(cluster: Cluster) -> None:
    assert "CustomResourceDefinition" not in kinds(render(cluster, "crds.install=false"))


def test_bundled_redis_is_off_by_default_and_complete_when_on(cluster: Cluster) -> None:
    assert "Service" not in kinds(render(cluster))
    docs = render(cluster, "redis.enabled=true", "redis.password=hunter2")
    secret = one(docs, "Secret", "-redis")
    assert base64.b64decode(secret["data"]["password"]) == b"hunter2"
    service = one(docs, "Service", "-redis")
    assert service["spec"]["ports"][0]["port"] == 6379
    redis = one(docs, "Deployment", "-redis")
    [container] = redis["spec"]["template"]["spec"]["containers"]
    assert "--requirepass" in container["args"]
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    generated = one(render(cluster, "redis.enabled=true"), "Secret", "-redis")
    assert len(base64.b64decode(generated["data"]["password"])) == 32


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("operator.watchNamespace=team-a", "additional properties 'watchNamespace' not allowed"),
        ("redis.enable=true", "additional properties 'enable' not allowed"),
        ("operator.logFormat=xml", "value must be one of 'json', 'plain'"),
        ("image.pullPolicy=Sometimes", "value must be one of 'Always', 'IfNotPresent', 'Never'"),
        ("operator.eventWindowSeconds=0", "minimum: got 0, want 1"),
        ("operator.watchNamespaces={Team_A}", "does not match pattern"),
        ("operator.resources.limits.memory=lots", "/operator/resources/limits/memory"),
    ],
)
def test_values_schema_rejects_unknown_keys_and_bad_values(
    cluster: Cluster, value: str, message: str
) -> None:
    with pytest.raises(ControlPlaneError) as failed:
        render(cluster, value)
    assert message in str(failed.value)


def test_every_value_is_commented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    bare = []
    for i, line in enumerate(lines):
        key = re.match(r"^( {0,2})([A-Za-z]+):", line)
        if key is None:
            continue
        above = lines[i - 1].strip() if i else ""
        if not above.startswith("#"):
            bare.append(line.strip())
    assert bare == []


def _adopt_crd(cluster: Cluster, release: str, namespace: str) -> None:
    """Let this release own a CRD other tests applied with kubectl (Helm's adoption rules)."""
    if cluster.kubectl("get", "crd", "jobqueues.sigrun.dev", check=False).returncode != 0:
        return
    cluster.kubectl(
        "label", "--overwrite", "crd", "jobqueues.sigrun.dev", "app.kubernetes.io/managed-by=Helm"
    )
    cluster.kubectl(
        "annotate",
        "--overwrite",
        "crd",
        "jobqueues.sigrun.dev",
        f"meta.helm.sh/release-name={release}",
        f"meta.helm.sh/release-namespace={namespace}",
    )


def _token_kubeconfig(cluster: Cluster, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (TokenRequest API)."""
    token = cluster.rest().request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )["status"]["token"]
    ca = base64.b64encode((cluster.state_dir / "pki" / "ca.crt").read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "sa",
        "clusters": [
            {"name": "c", "cluster": {"server": cluster.api_url, "certificate-authority-data": ca}}
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [
            {"name": "sa", "context": {"cluster": "c", "user": account, "namespace": namespace}}
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def can_i(cluster: Cluster, who: str, *args: str) -> bool:
    done = cluster.kubectl("auth", "can-i", f"--as={who}", *args, check=False)
    return done.stdout.strip() == "yes"


@pytest.mark.timeout(180)
def test_helm_install_creates_the_crd_rbac_and_operator_and_the_rbac_runs_the_operator(
    *, cluster: Cluster, namespace: str, redis_url: str, redis: SyncRedis, tmp_path: Path
) -> None:
    release = "sigrun"
    _adopt_crd(cluster, release, namespace)
    cluster.helm(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        f"operator.watchNamespaces={{{namespace}}}",
    )
    try:
        crd = yaml.safe_load(
            cluster.kubectl("get", "crd", "jobqueues.sigrun.dev", "-o", "yaml").stdout
        )
        assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == release
        operator = get_deployment(cluster, namespace, "sigrun-operator")
        assert operator is not None and operator["spec"]["strategy"]["type"] == "Recreate"
        cluster.kubectl("get", "role,rolebinding", "sigrun-operator", "-n", namespace)
        cluster.kubectl("get", "serviceaccount", "sigrun", "-n", namespace)

        who = f"system:serviceaccount:{namespace}:sigrun"
        for verb, resource in [
            ("watch", "jobqueues.sigrun.dev"),
            ("patch", "jobqueues.sigrun.dev"),
            ("patch", "jobqueues.sigrun.dev/status"),
            ("create", "deployments.apps"),
            ("patch", "deployments.apps"),
            ("watch", "pods"),
            ("patch", "pods"),
            ("create", "events"),
            ("patch", "events"),
            ("get", "secrets"),
        ]:
            assert can_i(cluster, who, verb, resource, "-n", namespace), (verb, resource)
        for args in [
            ("get", "secrets", "-n", "default"),
            ("list", "secrets", "-n", namespace),
            ("get", "secrets", "--all-namespaces"),
            ("delete", "pods", "-n", namespace),
            ("create", "pods", "-n", namespace),
            ("list", "jobqueues.sigrun.dev", "-n", "default"),
            ("create", "clusterroles.rbac.authorization.k8s.io"),
        ]:
            assert not can_i(cluster, who, *args), args

        # The proof: the real operator, authenticated only as that ServiceAccount.
        kubeconfig = _token_kubeconfig(cluster, namespace, "sigrun", tmp_path / "sa.kubeconfig")
        process = OperatorProcess(
            cluster, namespace, tmp_path / "operator.log", kubeconfig=kubeconfig
        )
        process.start()
        try:
            kubectl_apply(
                cluster,
                namespace,
                jobqueue("imports", redis_url, ["q"]),
            )
            wait_condition(cluster, namespace, "imports", "Ready", "True")
            eventually(
                lambda: get_deployment(cluster, namespace, "imports-runner"), what="Deployment"
            )
            client.enqueue(redis, "q", "tests.operator.jobs:noop")  # 0 -> 1 replica: an Event
            eventually(
                lambda: (
                    cluster.kubectl(
                        "get",
                        "events",
                        "-n",
                        namespace,
                        "--field-selector",
                        "reason=Scaled",
                        "-o",
                        "name",
                    ).stdout
                ),
                what="an Event posted with the ServiceAccount's rights",
            )
        finally:
            process.stop()
        log = process.log.read_text()
        assert "Forbidden" not in log and " 403" not in log, log[-3000:]
    finally:
        cluster.helm("uninstall", release, "--namespace", namespace)
    # Uninstalled: the CRD stays (resource-policy: keep), so JobQueues everywhere survive.
    assert cluster.kubectl("get", "crd", "jobqueues.sigrun.dev", check=False).returncode == 0


def test_chart_kube_version_floor_is_enforced(cluster: Cluster, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(cluster.binaries["helm"]), "template", "rel", str(CHART), "--kube-version", "1.27.9"],
        capture_output=True,
        text=True,
        check=False,
        env=cluster.env(),
    )
    assert done.returncode != 0
    assert "chart requires kubeVersion: >=1.28.0-0" in done.stderr


def test_cluster_wide_install_grants_what_kopf_needs_to_watch_every_namespace(
    cluster: Cluster, namespace: str
) -> None:
    release = f"cw-{namespace[-6:]}"
    cluster.helm(
        "install", release, str(CHART), "--namespace", namespace, "--set", "crds.install=false"
    )
    try:
        who = f"system:serviceaccount:{namespace}:{release}-sigrun"
        for args in [
            ("watch", "jobqueues.sigrun.dev", "--all-namespaces"),
            ("patch", "jobqueues.sigrun.dev/status", "-n", "default"),
            ("watch", "pods", "--all-namespaces"),
            ("create", "deployments.apps", "-n", "default"),
            ("watch", "namespaces"),
            ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
            ("get", "secrets", "-n", "default"),  # Redis passwords, wherever JobQueues are
        ]:
            assert can_i(cluster, who, *args), args
        for args in [
            ("list", "secrets", "--all-namespaces"),
            ("create", "pods", "-n", "default"),
            ("delete", "namespaces"),
            ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ]:
            assert not can_i(cluster, who, *args), args
    finally:
        cluster.helm("uninstall", release, "--namespace", namespace)

"""helm, built by scripts/build-control-plane, renders and installs a chart into the cluster.

Why: sigrun ships a Helm chart (charts/); its tests need a helm that talks to the same API server,
with the version information (ldflags) right, since charts may constrain kubeVersion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.cluster.controlplane import Cluster

pytestmark = pytest.mark.cluster

CHART = Path(__file__).parent / "testdata" / "hello"


def test_helm_version_is_v3(cluster: Cluster) -> None:
    version = cluster.helm("version", "--short").stdout.strip()
    assert version.startswith("v3."), version


def test_helm_template_renders_the_chart(cluster: Cluster) -> None:
    rendered = cluster.helm("template", "demo", str(CHART), "--set", "message=hi there").stdout
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc]
    assert sorted(doc["kind"] for doc in docs) == ["ConfigMap", "ServiceAccount"]
    [configmap] = [doc for doc in docs if doc["kind"] == "ConfigMap"]
    assert configmap["metadata"]["name"] == "demo-hello"
    assert configmap["data"]["message"] == "hi there"
    # Without a cluster, helm uses its built-in Kubernetes version: set to 1.34 by the ldflags.
    assert configmap["data"]["kubeVersion"].startswith("v1.34.")


def test_helm_install_puts_the_chart_into_the_cluster(
    cluster: Cluster, api_client: client.ApiClient, namespace: str
) -> None:
    cluster.helm("install", "demo", str(CHART), "--namespace", namespace, "--wait", "--timeout=60s")

    core: Any = client.CoreV1Api(api_client)
    configmap = core.read_namespaced_config_map("demo-hello", namespace)
    assert configmap.data["message"] == "hello from sigrun"
    # Installed against the cluster, helm reads the server's version.
    server = client.VersionApi(api_client).get_code().git_version
    assert configmap.data["kubeVersion"] == server

    releases = yaml.safe_load(cluster.helm("list", "--namespace", namespace, "-o", "yaml").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("demo", "deployed")]

    cluster.helm("uninstall", "demo", "--namespace", namespace, "--wait")
    remaining = core.list_namespaced_config_map(
        namespace, label_selector="app.kubernetes.io/instance=demo"
    )
    assert remaining.items == []

"""The API server answers, and CRDs work end to end (kubectl apply, Established, status).

Why: the operator's own resources are CRDs with a status subresource; these are the API server
behaviours it relies on, checked against the real binaries rather than a fake.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.cluster.controlplane import Cluster

pytestmark = pytest.mark.cluster


def test_api_server_answers_with_the_pinned_version(
    cluster: Cluster, api_client: client.ApiClient
) -> None:
    info = client.VersionApi(api_client).get_code()
    assert info.git_version.startswith("v1.34.")
    assert cluster.rest().request("GET", "/readyz") == "ok"

    versions = json.loads(cluster.kubectl("version", "--output=json").stdout)
    assert versions["serverVersion"]["gitVersion"] == info.git_version
    assert versions["clientVersion"]["gitVersion"] == info.git_version


def test_node_is_ready_and_schedulable(cluster: Cluster, api_client: client.ApiClient) -> None:
    core: Any = client.CoreV1Api(api_client)
    node = core.read_node(cluster.node_name)
    ready = [c for c in node.status.conditions if c.type == "Ready"]
    assert [c.status for c in ready] == ["True"]
    assert not node.spec.taints


def _crd(group: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {"phase": {"type": "string"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def widget_group(cluster: Cluster) -> Iterator[str]:
    """A CRD applied with kubectl; a random group, so runs against a reused cluster never clash."""
    group = f"t{secrets.token_hex(4)}.sigrun.test"
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(_crd(group)))
    try:
        yield group
    finally:
        cluster.kubectl("delete", "crd", f"widgets.{group}", "--wait=false")


def test_crd_applied_with_kubectl_becomes_established(
    cluster: Cluster, api_client: client.ApiClient, widget_group: str
) -> None:
    name = f"widgets.{widget_group}"
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=30s")

    extensions: Any = client.ApiextensionsV1Api(api_client)
    crd = extensions.read_custom_resource_definition(name)
    conditions = {c.type: c.status for c in crd.status.conditions}
    assert conditions["Established"] == "True"
    assert conditions["NamesAccepted"] == "True"


def test_custom_object_is_created_read_and_its_status_patched(
    cluster: Cluster, api_client: client.ApiClient, widget_group: str, namespace: str
) -> None:
    cluster.kubectl(
        "wait", "--for=condition=Established", f"crd/widgets.{widget_group}", "--timeout=30s"
    )
    objects: Any = client.CustomObjectsApi(api_client)
    where = (widget_group, "v1", namespace, "widgets")
    body = {
        "apiVersion": f"{widget_group}/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"size": 3},
        "status": {"phase": "ignored on create"},
    }

    created = objects.create_namespaced_custom_object(*where, body)
    # With the status subresource on, the main endpoint drops status.
    assert "status" not in created

    read = objects.get_namespaced_custom_object(*where, "w1")
    assert read["spec"] == {"size": 3}
    assert read["metadata"]["uid"] == created["metadata"]["uid"]

    patched = objects.patch_namespaced_custom_object_status(
        *where, "w1", {"status": {"phase": "Running"}}
    )
    assert patched["status"] == {"phase": "Running"}

    # ... and the main endpoint ignores status: only spec changes.
    objects.patch_namespaced_custom_object(
        *where, "w1", {"spec": {"size": 4}, "status": {"phase": "Overwritten"}}
    )
    read = objects.get_namespaced_custom_object(*where, "w1")
    assert read["spec"] == {"size": 4}
    assert read["status"] == {"phase": "Running"}

    phase = cluster.kubectl(
        "get", f"widgets.{widget_group}", "w1", "-n", namespace, "-o", "jsonpath={.status.phase}"
    ).stdout
    assert phase == "Running"


def test_schema_validation_rejects_an_invalid_custom_object(
    cluster: Cluster, api_client: client.ApiClient, widget_group: str, namespace: str
) -> None:
    cluster.kubectl(
        "wait", "--for=condition=Established", f"crd/widgets.{widget_group}", "--timeout=30s"
    )
    body = {
        "apiVersion": f"{widget_group}/v1",
        "kind": "Widget",
        "metadata": {"name": "too-small"},
        "spec": {"size": 0},
    }
    with pytest.raises(client.ApiException) as raised:
        client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            widget_group, "v1", namespace, "widgets", body
        )
    assert raised.value.status == 422

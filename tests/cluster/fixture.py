"""pytest plugin: one local control plane per session, one namespace per test.

Why a plugin module and not only a conftest: tests outside tests/cluster (the operator's, the
runner's) need the same single cluster per session. Register it once for the whole suite with
``pytest_plugins = ["tests.cluster.fixture"]`` in tests/conftest.py; tests/cluster/conftest.py
also loads it, so ``pytest tests/cluster`` works on its own.

Fixtures:

- ``cluster`` (session): a started :class:`~tests.cluster.controlplane.Cluster` with
  ``kubeconfig``, ``api_url``, ``bin_dir``, ``binaries``, ``node_name`` and the helpers
  ``api_client()``, ``rest()``, ``kubectl(...)``, ``helm(...)``, ``env()``. With
  ``SIGRUN_CLUSTER_DIR`` pointing at a cluster started by ``python -m tests.cluster up``, the
  session attaches to it and leaves it running (fast edit-test loops).
- ``namespace`` (function): a fresh namespace whose default ServiceAccount exists; deleted after.
- ``api_client`` (session): an official ``kubernetes.client.ApiClient`` for the cluster (admin),
  closed at the end so no socket is left for the garbage collector to warn about.

Every test that uses ``cluster`` (directly or through ``namespace``) gets the ``cluster`` marker,
so ``-m "not cluster"`` deselects exactly the tests that need the control plane.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.cluster.controlplane import Cluster, ControlPlaneError

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    attach_dir = os.environ.get("SIGRUN_CLUSTER_DIR")
    if attach_dir:
        attached = Cluster.attach(Path(attach_dir))
        if attached is None or not attached.is_running():
            raise ControlPlaneError(
                f"SIGRUN_CLUSTER_DIR={attach_dir} has no running cluster;"
                " start one with `python -m tests.cluster up` or unset it"
            )
        yield attached
        return
    started = Cluster.start(tmp_path_factory.mktemp("cluster"), owner_pid=os.getpid())
    try:
        yield started
    finally:
        peaks = started.stop()
        log.info("control plane peak RSS (MiB): %s", {k: v // 1024 for k, v in peaks.items()})


def _namespace_name(test_name: str) -> str:
    """A DNS label (<= 63 chars) that says which test made it, unique across runs."""
    stem = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")
    stem = stem.removeprefix("test-")[:48].rstrip("-") or "t"
    return f"{stem}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = _namespace_name(request.node.name)
    cluster.create_namespace(name)
    try:
        yield name
    finally:
        cluster.delete_namespace(name)


@pytest.fixture(scope="session")
def api_client(cluster: Cluster) -> Iterator[ApiClient]:
    client = cluster.api_client()
    try:
        yield client
    finally:
        closer: Any = client  # untyped in some kubernetes releases
        closer.close()

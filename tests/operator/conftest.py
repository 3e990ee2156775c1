"""Fixtures for the operator tests: the JobQueue CRD and the real operator process.

The control plane itself (``cluster``, ``namespace``) comes from tests/cluster, registered in
tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.controlplane import Cluster
from tests.operator.support import CRD_FILE, OperatorProcess


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> str:
    """The JobQueue CRD, applied from the very file the chart ships."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/jobqueues.sigrun.dev", "--timeout=30s"
    )
    return "jobqueues.sigrun.dev"


@pytest.fixture
def operator(
    cluster: Cluster, crd: str, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """``sigrun operator --namespace <the test's namespace>``, stopped after the test."""
    process = OperatorProcess(cluster, namespace, tmp_path / "operator.log").start()
    try:
        yield process
    finally:
        process.stop()

"""Helpers for the operator tests: the real ``sigrun operator`` as a process, and the API.

The operator runs exactly as in a pod (``sigrun operator --namespace NS``), here against the
local control plane through its kubeconfig.  Everything is observed through the API the way
a user would (``kubectl get``, ``kubectl describe``) or through Redis.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.cluster.controlplane import ApiError, Cluster, wait_for
from tests.conftest import REPO, sigrun_command

CRD_FILE = REPO / "charts" / "sigrun" / "crds-src" / "jobqueue.yaml"
JOBS = "tests.operator.jobs"
API = "/apis/sigrun.dev/v1alpha1"

T = TypeVar("T")


class OperatorProcess:
    """``sigrun operator`` started by the test, stopped by its PID only."""

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        log: Path,
        *extra: str,
        kubeconfig: Path | None = None,
    ) -> None:
        self.cluster = cluster
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log = log
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> OperatorProcess:
        assert self.process is None
        self.starts += 1
        env = self.cluster.env()
        env.pop("SIGRUN_WATCH_NAMESPACES", None)
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        args = ["operator", "--namespace", self.namespace, "--log-format", "json", *self.extra]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                sigrun_command(*args), stdout=out, stderr=subprocess.STDOUT, env=env
            )
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        process, self.process = self.process, None
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(sig)
        try:
            return process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def kill(self) -> None:
        """An abrupt end (OOM-killed operator, node gone): no cleanup of any kind."""
        self.stop(signal.SIGKILL)

    def lines(self) -> list[dict[str, Any]]:
        """The JSON log lines (``--log-format json``); anything else is a test failure."""
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


def kubectl_apply(cluster: Cluster, namespace: str, manifest: Mapping[str, Any]) -> str:
    return cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(dict(manifest))
    ).stdout


def jobqueue(
    name: str,
    redis_url: str,
    queues: list[str],
    *,
    runner: Mapping[str, Any] | None = None,
    scaling: Mapping[str, Any] | None = None,
    redis: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "sigrun.dev/v1alpha1",
        "kind": "JobQueue",
        "metadata": {"name": name},
        "spec": {
            "queues": queues,
            "redis": {"url": redis_url, **(redis or {})},
            "runner": {
                "image": "registry.invalid/sigrun:test",
                "allowedModules": [JOBS],
                **(runner or {}),
            },
            "scaling": {
                "minReplicas": 0,
                "maxReplicas": 12,
                "jobsPerReplica": 10,
                "cooldownSeconds": 60,
                **(scaling or {}),
            },
            "retry": {"backoffSeconds": 30},
        },
    }


def get_jobqueue(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = cluster.rest().request(
        "GET", f"{API}/namespaces/{namespace}/jobqueues/{name}"
    )
    return body


def condition(body: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for c in (body.get("status") or {}).get("conditions") or ():
        if c.get("type") == kind:
            return dict(c)
    return None


def wait_condition(
    cluster: Cluster, namespace: str, name: str, kind: str, status: str, *, timeout: float = 30
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        found = condition(get_jobqueue(cluster, namespace, name), kind)
        return found if found and found.get("status") == status else None

    return wait_for(check, what=f"{kind}={status} on jobqueue {name}", timeout=timeout)


def get_deployment(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        body: dict[str, Any] = cluster.rest().request(
            "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
        )
    except ApiError as e:
        if e.status == 404:
            return None
        raise
    return body


def runner_pods(cluster: Cluster, namespace: str, jobqueue_name: str) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/name=sigrun-runner,sigrun.dev/jobqueue={jobqueue_name}"
    body = cluster.rest().request(
        "GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}"
    )
    return [p for p in body["items"] if not p["metadata"].get("deletionTimestamp")]


def events(
    cluster: Cluster, namespace: str, name: str, reason: str | None = None
) -> list[dict[str, Any]]:
    selector = f"involvedObject.name={name},involvedObject.kind=JobQueue"
    body = cluster.rest().request(
        "GET", f"/api/v1/namespaces/{namespace}/events?fieldSelector={selector}"
    )
    found = [e for e in body["items"] if reason is None or e["reason"] == reason]
    return sorted(found, key=lambda e: e.get("lastTimestamp") or "")


def eventually(check: Callable[[], T], what: str, timeout: float = 30) -> T:
    """Poll until ``check()`` is truthy (an empty list is *not* done) and return that value."""

    def truthy() -> T | None:
        value = check()
        return value if value else None

    return wait_for(truthy, what=what, timeout=timeout, interval=0.1)


def measure(check: Callable[[], object], what: str, timeout: float = 30) -> float:
    """Seconds until ``check()`` is truthy (for the reaction times the report quotes)."""
    began = time.monotonic()
    wait_for(lambda: check() or None, what=what, timeout=timeout, interval=0.05)
    return time.monotonic() - began


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

"""The stand-in for a kubelet: registers the test Node and keeps it alive.

Why a process of its own: a cluster started by ``python -m tests.cluster up`` must keep working
after that command returns, so the heartbeat cannot live in a thread of it. The agent does the
two things of a kubelet that the control plane needs and nothing else (no containers run):

- registers the Node with a Ready condition and renews its Lease in ``kube-node-lease`` and its
  Ready heartbeat every 10 s (the node lifecycle controller is off anyway; this keeps what
  ``kubectl get nodes`` and lease readers see honest);
- completes the deletion of Pods on its node once they are marked for deletion, as a kubelet
  does after their containers stopped; without it they would stay Terminating forever and
  scaling down or deleting a namespace would never finish.

It exits by itself when the API server has been unreachable for a minute (the cluster is gone).
Started by the pytest fixture, it also watches the pytest process (``--owner-pid``): if that dies
without tearing the cluster down (kill -9, a CI job cancelled), the agent stops the cluster's
processes itself, so none is left running on a developer's machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import time
import urllib.parse
from pathlib import Path
from typing import Any, Final

from tests.cluster.controlplane import ApiError, Cluster, ControlPlaneError, Rest

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS: Final = 10.0
POLL_SECONDS: Final = 0.5
GIVE_UP_SECONDS: Final = 60.0
NOT_READY_TAINTS: Final = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
LEASE_SECONDS: Final = 40


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_manifest(name: str, version: str) -> dict[str, Any]:
    """A Node as a kubelet would register it; status is kept on create for Nodes."""
    now = _now()
    resources = {"cpu": "32", "memory": "64Gi", "pods": "250", "ephemeral-storage": "100Gi"}
    pressure = [
        {
            "type": kind,
            "status": "False",
            "reason": f"KubeletHas{reason}",
            "message": "sigrun test node agent",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        for kind, reason in (
            ("MemoryPressure", "SufficientMemory"),
            ("DiskPressure", "NoDiskPressure"),
            ("PIDPressure", "SufficientPID"),
        )
    ]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "sigrun.dev/test-node": "true",
            },
        },
        "spec": {},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                *pressure,
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "sigrun test node agent (no containers run here)",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                },
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": "sigrun",
                "systemUUID": "sigrun",
                "bootID": "sigrun",
                "kernelVersion": "",
                "osImage": "sigrun test node",
                "containerRuntimeVersion": "none://0",
                "kubeletVersion": version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


def _start_time(pid: int) -> str | None:
    """The start time of a process (field 22 of /proc/PID/stat): tells a reused PID apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


class Owner:
    """The process whose life the cluster shares (pytest); None for `up` (detached clusters)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.started = _start_time(pid)

    def alive(self) -> bool:
        return self.started is not None and _start_time(self.pid) == self.started


def stop_orphaned_cluster(state_dir: Path) -> None:
    """Stop the other components of the cluster recorded in state_dir (their owner died)."""
    cluster = Cluster.attach(state_dir)
    if cluster is None:
        return
    cluster.components = [c for c in cluster.components if c.pid != os.getpid()]
    cluster.stop()


class Agent:
    def __init__(self, rest: Rest, node: str, owner: Owner | None = None) -> None:
        self.rest = rest
        self.node = node
        self.owner = owner

    def register(self) -> None:
        # Report the API server's own version as the kubelet's: always within the skew policy.
        version = self.rest.request("GET", "/version")["gitVersion"]
        manifest = node_manifest(self.node, version)
        try:
            self.rest.request("POST", "/api/v1/nodes", manifest)
        except ApiError as e:
            if e.status != 409:
                raise
            # Already there (agent restarted): make it Ready again.
            self.rest.request(
                "PATCH",
                f"/api/v1/nodes/{self.node}/status",
                {"status": manifest["status"]},
                content_type="application/strategic-merge-patch+json",
            )
        self._drop_not_ready_taint()
        log.info("registered node %s", self.node)

    def _drop_not_ready_taint(self) -> None:
        # The TaintNodesByCondition admission plugin taints every new Node not-ready; the node
        # lifecycle controller would lift it once Ready, but that controller is off (see
        # controlplane), so lift it here, as that controller would. Other taints are kept.
        node = self.rest.request("GET", f"/api/v1/nodes/{self.node}")
        taints = node.get("spec", {}).get("taints") or []
        kept = [t for t in taints if t.get("key") not in NOT_READY_TAINTS]
        if len(kept) != len(taints):
            self.rest.request(
                "PATCH",
                f"/api/v1/nodes/{self.node}",
                {
                    "metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                    "spec": {"taints": kept or None},
                },
                content_type="application/merge-patch+json",
            )

    def heartbeat(self) -> None:
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}"
        renew = {"spec": {"holderIdentity": self.node, "renewTime": _micro_now()}}
        try:
            self.rest.request(
                "PATCH", lease_path, renew, content_type="application/merge-patch+json"
            )
        except ApiError as e:
            if e.status != 404:
                raise
            self.rest.request(
                "POST",
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.node},
                    "spec": {**renew["spec"], "leaseDurationSeconds": LEASE_SECONDS},
                },
            )
        self.rest.request(
            "PATCH",
            f"/api/v1/nodes/{self.node}/status",
            {"status": {"conditions": [{"type": "Ready", "lastHeartbeatTime": _now()}]}},
            content_type="application/strategic-merge-patch+json",
        )

    def finish_deletions(self) -> None:
        """Delete, with grace 0, the pods on our node that are marked for deletion."""
        selector = urllib.parse.quote(f"spec.nodeName={self.node}")
        pods = self.rest.request("GET", f"/api/v1/pods?fieldSelector={selector}")
        for pod in pods.get("items", []):
            meta = pod["metadata"]
            if not meta.get("deletionTimestamp"):
                continue
            self.rest.request(
                "DELETE",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": meta["uid"]},
                },
                ok=(200, 202, 404, 409),
            )

    def run(self) -> None:
        last_ok = time.monotonic()
        registered = False
        last_beat = 0.0
        while True:
            if self.owner is not None and not self.owner.alive():
                log.error("owner process %d is gone; stopping the cluster", self.owner.pid)
                return
            try:
                if not registered:
                    self.register()
                    registered = True
                if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                    self.heartbeat()
                    last_beat = time.monotonic()
                self.finish_deletions()
                last_ok = time.monotonic()
            except (ControlPlaneError, OSError) as e:
                if time.monotonic() - last_ok > GIVE_UP_SECONDS:
                    log.error("API server unreachable for %.0f s, exiting: %s", GIVE_UP_SECONDS, e)
                    return
                log.warning("node agent: %s", e)
            time.sleep(POLL_SECONDS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster agent")
    parser.add_argument("--server", required=True)
    parser.add_argument("--pki", required=True, type=Path)
    parser.add_argument("--node", required=True)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--owner-pid", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    pki: Path = args.pki
    rest = Rest(args.server, pki / "ca.crt", pki / "admin.crt", pki / "admin.key")
    owner = None if args.owner_pid is None else Owner(args.owner_pid)
    Agent(rest, args.node, owner).run()
    if owner is not None and not owner.alive():
        stop_orphaned_cluster(args.state_dir)
    return 0

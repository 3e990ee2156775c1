"""Start and stop a local Kubernetes control plane from real binaries, like envtest does.

Why this shape:

- Real etcd, kube-apiserver, kube-controller-manager and kube-scheduler, so validation, RBAC,
  status subresources, garbage collection, Deployments and scheduling behave as in production.
- No kubelet: one Node object is registered and kept alive by ``tests.cluster.agent`` (a separate
  process, so a cluster started by ``python -m tests.cluster up`` outlives that command). Pods are
  bound to it by the real scheduler but never run. KCM's node lifecycle controller is disabled, so
  the node can never be tainted NotReady, however late a heartbeat is.
- Every process is started in its own session (process group) and stopped by that PID only; its
  PID and binary are stored in ``state.json`` so ``down`` finds exactly what ``up`` started.
- The fixture's own API calls use a tiny stdlib REST client, not the official ``kubernetes``
  package, so the harness does not depend on that package's (changing) generated API.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import yaml

from tests.cluster.pki import Pki

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
BUILD_SCRIPT: Final = REPO_ROOT / "scripts" / "build-control-plane"
BINARIES: Final = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "helm",
)
NODE_NAME: Final = "sigrun-node-0"
SERVICE_CIDR: Final = "10.0.0.0/24"
# The name `kube-controller-manager --help` lists under --controllers (v1.34).
NODE_LIFECYCLE_CONTROLLER: Final = "node-lifecycle-controller"
STATE_FILE: Final = "state.json"

T = TypeVar("T")

# How the node agent is started: the repo root is *appended* to sys.path, never put first (nor
# in PYTHONPATH), because the repo's operator/ folder would shadow the standard library's
# `operator` module (see pyproject.toml).
_AGENT_MAIN: Final = (
    "import sys; "
    f"sys.path.append({str(REPO_ROOT)!r}); "
    "from tests.cluster.agent import main; "
    "sys.exit(main(sys.argv[1:]))"
)


class ControlPlaneError(Exception):
    """The local control plane could not be built, started, reached or stopped."""


class ApiError(ControlPlaneError):
    """The API server answered with an unexpected HTTP status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status


# -- binaries ---------------------------------------------------------------------------------


def _script_bin_dir(*, build: bool) -> Path:
    """Ask the build script for the versioned cache dir; with build=True, build what is missing."""
    args = [str(BUILD_SCRIPT)] if build else [str(BUILD_SCRIPT), "--print-bindir"]
    result = subprocess.run(
        args,
        check=False,
        stdout=subprocess.PIPE,
        stderr=None if build else subprocess.PIPE,
        text=True,
    )
    if result.returncode != 0:
        raise ControlPlaneError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return Path(result.stdout.strip().splitlines()[-1])


def resolve_binaries(*, build: bool = False) -> tuple[Path, dict[str, Path]]:
    """Find each binary: envtest's TEST_ASSET_<NAME>, then $KUBEBUILDER_ASSETS, then our cache.

    Returns the cache bin dir and the path of every binary. With build=False (the pytest
    fixture) a missing binary is an error telling how to build it: a cold build takes far longer
    than a test's timeout.
    """
    bin_dir = _script_bin_dir(build=build)
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    found: dict[str, Path] = {}
    for name in BINARIES:
        override = os.environ.get("TEST_ASSET_" + name.upper().replace("-", "_"))
        if override:
            found[name] = Path(override)
        elif assets and (Path(assets) / name).is_file():
            found[name] = Path(assets) / name
        else:
            found[name] = bin_dir / name
    missing = [str(path) for path in found.values() if not os.access(path, os.X_OK)]
    if missing:
        raise ControlPlaneError(
            f"control-plane binaries missing: {', '.join(missing)}; run scripts/build-control-plane"
            " first (a cold build takes ~30 min on 2 cores, then it is cached)"
        )
    return bin_dir, found


# -- small helpers ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    check: Callable[[], T | None],
    *,
    what: str,
    timeout: float = 30.0,
    interval: float = 0.2,
) -> T:
    """Poll check() until it returns something other than None/False; raise after timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = check()
        except (ControlPlaneError, OSError, ValueError, http.client.HTTPException) as e:
            last_error = e
        else:
            if value is not None and value is not False:
                return value
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise ControlPlaneError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def peak_rss_kib(pid: int) -> int | None:
    """VmHWM of a live process: its peak resident set size so far."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


class Rest:
    """Just enough HTTPS to the API server for the harness itself (admin client certificate)."""

    def __init__(self, server: str, ca_file: Path, cert_file: Path, key_file: Path) -> None:
        url = urllib.parse.urlsplit(server)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 443
        self.context = ssl.create_default_context(cafile=str(ca_file))
        self.context.load_cert_chain(str(cert_file), str(key_file))

    def request(
        self,
        method: str,
        path: str,
        body: object | None = None,
        *,
        content_type: str = "application/json",
        ok: Sequence[int] = (200, 201, 202),
        timeout: float = 10.0,
    ) -> Any:
        conn = http.client.HTTPSConnection(
            self.host, self.port, context=self.context, timeout=timeout
        )
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Accept": "application/json"}
            if data is not None:
                headers["Content-Type"] = content_type
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        if response.status not in ok:
            raise ApiError(method, path, response.status, raw.decode(errors="replace"))
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    def exists(self, path: str) -> bool:
        try:
            self.request("GET", path)
        except ApiError as e:
            if e.status == 404:
                return False
            raise
        return True


def _https_healthy(port: int, path: str = "/healthz") -> bool:
    """Health of KCM/scheduler: they serve a self-signed certificate they made themselves.

    Not verifying it is harmless here (a loopback probe that sends nothing secret), and it goes
    through the stdlib, so no urllib3 warning is involved.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status == 200 and response.read().strip() == b"ok"
    finally:
        conn.close()


def _http_json(url: str) -> Any:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5)
    try:
        conn.request("GET", parts.path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def write_kubeconfig(
    path: Path, server: str, pki: Pki, *, user: str, cert: Path, key: Path
) -> None:
    """A kubeconfig that points at files (kubectl, helm and client-go all accept paths)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "sigrun-test",
                "cluster": {"server": server, "certificate-authority": str(pki.ca.cert_file)},
            }
        ],
        "users": [
            {"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [{"name": "sigrun-test", "context": {"cluster": "sigrun-test", "user": user}}],
        "current-context": "sigrun-test",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


# -- processes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """One process we started: its PID is also its process group (start_new_session)."""

    name: str
    pid: int
    argv0: str

    def is_ours(self) -> bool:
        """Is the PID still the process we started (and not a recycled PID)?"""
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        state = stat.rsplit(")", 1)[1].split()[0]
        return state != "Z" and cmdline.split(b"\0", 1)[0].decode(errors="replace") == self.argv0

    def stop(self, popen: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
        if popen is not None and popen.poll() is not None:
            return
        if not self.is_ours():
            if popen is not None:
                popen.wait()
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if popen is not None:
                if popen.poll() is not None:
                    return
            elif not self.is_ours():
                return
            time.sleep(0.05)
        log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing", self.name, self.pid, grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        if popen is not None:
            popen.wait()


def _shm_dir(prefix: str) -> Path:
    """A dir on tmpfs when there is one: etcd's data there, with --unsafe-no-fsync, never waits."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


# -- the cluster ------------------------------------------------------------------------------


@dataclass
class Cluster:
    """A running local control plane: where it is, how to reach it, and how to stop it."""

    state_dir: Path
    kubeconfig: Path
    api_url: str
    bin_dir: Path
    binaries: dict[str, Path]
    node_name: str
    etcd_dir: Path
    components: list[Component] = field(default_factory=list)
    # Seconds from the start of Cluster.start() until each step was ready (for the README's
    # numbers, and to see at a glance which component is slow on a loaded CI machine).
    timings: dict[str, float] = field(default_factory=dict)
    _popens: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    _began: float = field(default=0.0, repr=False)

    # -- paths and clients --

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def rest(self) -> Rest:
        return Rest(
            self.api_url,
            self.pki_dir / "ca.crt",
            self.pki_dir / "admin.crt",
            self.pki_dir / "admin.key",
        )

    def api_client(self) -> ApiClient:
        """An official ``kubernetes`` client, admin credentials, verifying our CA."""
        from kubernetes import client  # noqa: PLC0415  (kept lazy: `up` and `down` need no client)

        configuration = client.Configuration()
        configuration.host = self.api_url
        configuration.ssl_ca_cert = str(self.pki_dir / "ca.crt")
        configuration.cert_file = str(self.pki_dir / "admin.crt")
        configuration.key_file = str(self.pki_dir / "admin.key")
        configuration.verify_ssl = True
        return client.ApiClient(configuration)

    def env(self) -> dict[str, str]:
        """Environment for kubectl/helm/anything: KUBECONFIG, our binaries first on PATH."""
        env = dict(os.environ)
        dirs = dict.fromkeys(str(self.binaries[name].parent) for name in ("kubectl", "helm"))
        env["PATH"] = os.pathsep.join([*dirs, env.get("PATH", "")])
        env["KUBECONFIG"] = str(self.kubeconfig)
        helm_home = self.state_dir / "helm"
        env["HELM_CONFIG_HOME"] = str(helm_home / "config")
        env["HELM_CACHE_HOME"] = str(helm_home / "cache")
        env["HELM_DATA_HOME"] = str(helm_home / "data")
        return env

    def _run(
        self, binary: str, args: Sequence[str], *, check: bool, input: str | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binaries[binary]), *args]
        result = subprocess.run(
            argv,
            env=self.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise ControlPlaneError(
                f"{binary} {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
            )
        return result

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        return self._run("kubectl", args, check=check, input=input, timeout=timeout)

    def helm(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        return self._run("helm", args, check=check, input=input, timeout=timeout)

    # -- namespaces --

    def create_namespace(self, name: str, *, timeout: float = 30.0) -> None:
        """Create a namespace and wait for its default ServiceAccount (pods need it to exist)."""
        rest = self.rest()
        rest.request(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
        wait_for(
            lambda: rest.exists(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
            what=f"ServiceAccount {name}/default",
            timeout=timeout,
        )

    def delete_namespace(self, name: str) -> None:
        """Delete a namespace; the namespace controller empties it in the background."""
        self.rest().request(
            "DELETE",
            f"/api/v1/namespaces/{name}",
            {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            ok=(200, 202, 404),
        )

    # -- life cycle --

    @classmethod
    def start(
        cls,
        state_dir: Path,
        *,
        bin_dir: Path | None = None,
        binaries: Mapping[str, Path] | None = None,
        node_name: str = NODE_NAME,
        owner_pid: int | None = None,
        timeout: float = 90.0,
    ) -> Cluster:
        """Start etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the node agent.

        Returns once the API server is ready, both controllers answer /healthz, the node is
        Ready and the default ServiceAccount exists (so pods can be created at once). With
        owner_pid, the node agent stops the cluster should that process die without stop().
        """
        if binaries is None or bin_dir is None:
            bin_dir, found = resolve_binaries()
            binaries = found if binaries is None else binaries
        state_dir.mkdir(parents=True, exist_ok=True)
        log_dir = state_dir / "logs"
        log_dir.mkdir(exist_ok=True)
        pki = Pki.create(state_dir / "pki")
        etcd_client, etcd_peer, api_port, kcm_port, sched_port = (free_port() for _ in range(5))
        api_url = f"https://127.0.0.1:{api_port}"

        admin_kubeconfig = state_dir / "kubeconfig"
        write_kubeconfig(
            admin_kubeconfig,
            api_url,
            pki,
            user="sigrun-admin",
            cert=pki.admin.cert_file,
            key=pki.admin.key_file,
        )
        kcm_kubeconfig = state_dir / "controller-manager.kubeconfig"
        write_kubeconfig(
            kcm_kubeconfig,
            api_url,
            pki,
            user="system:kube-controller-manager",
            cert=pki.controller_manager.cert_file,
            key=pki.controller_manager.key_file,
        )
        sched_kubeconfig = state_dir / "scheduler.kubeconfig"
        write_kubeconfig(
            sched_kubeconfig,
            api_url,
            pki,
            user="system:kube-scheduler",
            cert=pki.scheduler.cert_file,
            key=pki.scheduler.key_file,
        )

        cluster = cls(
            state_dir=state_dir,
            kubeconfig=admin_kubeconfig,
            api_url=api_url,
            bin_dir=bin_dir,
            binaries=dict(binaries),
            node_name=node_name,
            etcd_dir=_shm_dir("sigrun-etcd-"),
        )
        began = time.monotonic()
        deadline = began + timeout
        cluster._began = began

        def left() -> float:
            return max(deadline - time.monotonic(), 1.0)

        try:
            etcd_url = f"http://127.0.0.1:{etcd_client}"
            peer_url = f"http://127.0.0.1:{etcd_peer}"
            cluster._spawn(
                "etcd",
                [
                    str(binaries["etcd"]),
                    "--name=sigrun",
                    f"--data-dir={cluster.etcd_dir}",
                    f"--listen-client-urls={etcd_url}",
                    f"--advertise-client-urls={etcd_url}",
                    f"--listen-peer-urls={peer_url}",
                    f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster=sigrun={peer_url}",
                    "--unsafe-no-fsync=true",
                    "--log-level=warn",
                ],
            )
            cluster._wait(
                "etcd",
                lambda: _http_json(f"{etcd_url}/health").get("health") == "true",
                left(),
            )

            cluster._spawn(
                "kube-apiserver",
                [
                    str(binaries["kube-apiserver"]),
                    f"--etcd-servers={etcd_url}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    f"--secure-port={api_port}",
                    f"--tls-cert-file={pki.serving.cert_file}",
                    f"--tls-private-key-file={pki.serving.key_file}",
                    f"--client-ca-file={pki.ca.cert_file}",
                    # The aggregation layer's front proxy, as kubeadm sets it up; without it, every
                    # component logs "missing content for CA bundle ...requestheader-client-ca-file"
                    f"--requestheader-client-ca-file={pki.front_proxy_ca.cert_file}",
                    "--requestheader-allowed-names=front-proxy-client",
                    "--requestheader-username-headers=X-Remote-User",
                    "--requestheader-group-headers=X-Remote-Group",
                    "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                    f"--proxy-client-cert-file={pki.front_proxy_client.cert_file}",
                    f"--proxy-client-key-file={pki.front_proxy_client.key_file}",
                    "--authorization-mode=RBAC",
                    f"--service-account-issuer={api_url}",
                    f"--service-account-key-file={pki.service_account_pub}",
                    f"--service-account-signing-key-file={pki.service_account_key}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    # One API server on loopback: no endpoints for the kubernetes Service needed.
                    "--endpoint-reconciler-type=none",
                    "--allow-privileged=true",
                    "--profiling=false",
                    f"--cert-dir={state_dir / 'apiserver'}",
                ],
            )
            rest = cluster.rest()
            cluster._wait(
                "kube-apiserver", lambda: rest.request("GET", "/readyz", timeout=5) == "ok", left()
            )

            common = ["--leader-elect=false", "--bind-address=127.0.0.1", "--profiling=false"]
            cluster._spawn(
                "kube-controller-manager",
                [
                    str(binaries["kube-controller-manager"]),
                    f"--kubeconfig={kcm_kubeconfig}",
                    f"--authentication-kubeconfig={kcm_kubeconfig}",
                    f"--authorization-kubeconfig={kcm_kubeconfig}",
                    f"--secure-port={kcm_port}",
                    f"--cert-dir={state_dir / 'controller-manager'}",
                    *common,
                    # Each controller acts as its own ServiceAccount, as kubeadm sets it up: the
                    # bootstrap RBAC roles assume it.
                    "--use-service-account-credentials=true",
                    f"--service-account-private-key-file={pki.service_account_key}",
                    f"--root-ca-file={pki.ca.cert_file}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    f"--controllers=*,-{NODE_LIFECYCLE_CONTROLLER}",
                    "--kube-api-qps=100",
                    "--kube-api-burst=200",
                ],
            )
            cluster._spawn(
                "kube-scheduler",
                [
                    str(binaries["kube-scheduler"]),
                    f"--kubeconfig={sched_kubeconfig}",
                    f"--authentication-kubeconfig={sched_kubeconfig}",
                    f"--authorization-kubeconfig={sched_kubeconfig}",
                    f"--secure-port={sched_port}",
                    f"--cert-dir={state_dir / 'scheduler'}",
                    *common,
                ],
            )
            cluster._spawn(
                "node-agent",
                [
                    sys.executable,
                    "-c",
                    _AGENT_MAIN,
                    f"--server={api_url}",
                    f"--pki={pki.ca.cert_file.parent}",
                    f"--node={node_name}",
                    f"--state-dir={state_dir}",
                    *([] if owner_pid is None else [f"--owner-pid={owner_pid}"]),
                ],
            )
            cluster._wait("kube-controller-manager", lambda: _https_healthy(kcm_port), left())
            cluster._wait("kube-scheduler", lambda: _https_healthy(sched_port), left())
            cluster._wait("node-agent", lambda: cluster.node_ready(rest), left(), step="node")
            cluster._wait(
                "kube-controller-manager",
                lambda: rest.exists("/api/v1/namespaces/default/serviceaccounts/default"),
                left(),
                step="default-serviceaccount",
            )
            log.info("control plane ready: %s", cluster.timings)
            cluster.save()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def node_ready(self, rest: Rest | None = None) -> bool:
        """Is the test node Ready and free of taints that keep pods off it?"""
        rest = rest or self.rest()
        try:
            node = rest.request("GET", f"/api/v1/nodes/{self.node_name}")
        except ApiError as e:
            if e.status == 404:
                return False
            raise
        conditions = node.get("status", {}).get("conditions", [])
        taints = node.get("spec", {}).get("taints") or []
        return not any(t.get("effect") in ("NoSchedule", "NoExecute") for t in taints) and any(
            c["type"] == "Ready" and c["status"] == "True" for c in conditions
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=True,
            )
        self._popens[name] = popen
        self.components.append(Component(name, popen.pid, argv[0]))
        log.info("started %s (pid %d), log %s", name, popen.pid, log_path)

    def _wait(
        self, name: str, check: Callable[[], bool], timeout: float, *, step: str | None = None
    ) -> None:
        popen = self._popens[name]

        def alive_and_ready() -> bool:
            if popen.poll() is not None:
                raise _DiedError(name)
            return check()

        try:
            wait_for(alive_and_ready, what=f"{name} to become ready", timeout=timeout)
        except _DiedError:
            raise ControlPlaneError(
                f"{name} exited with {popen.returncode}; last log lines:\n"
                + _log_tail(self.log_dir / f"{name}.log")
            ) from None
        except ControlPlaneError as e:
            raise ControlPlaneError(
                f"{e}; last log lines of {name}:\n{_log_tail(self.log_dir / f'{name}.log')}"
            ) from None
        self.timings[step or name] = round(time.monotonic() - self._began, 2)

    def peak_rss_kib(self) -> dict[str, int]:
        """Peak resident memory of each component so far (VmHWM), in KiB."""
        peaks = {c.name: peak_rss_kib(c.pid) for c in self.components if c.is_ours()}
        return {name: kib for name, kib in peaks.items() if kib is not None}

    def stop(self) -> dict[str, int]:
        """Stop what we started, newest first; returns (and logs) each component's peak RSS."""
        peaks = self.peak_rss_kib()
        if peaks:
            (self.log_dir / "peak-rss-kib.json").write_text(json.dumps(peaks, indent=2) + "\n")
            log.info("peak RSS (KiB): %s, total %d", peaks, sum(peaks.values()))
        for component in reversed(self.components):
            component.stop(self._popens.get(component.name))
        self._popens.clear()
        shutil.rmtree(self.etcd_dir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / STATE_FILE).unlink()
        return peaks

    def is_running(self) -> bool:
        return bool(self.components) and all(c.is_ours() for c in self.components)

    # -- state file, for `python -m tests.cluster down|env` and for attaching --

    def save(self) -> None:
        state = {
            "kubeconfig": str(self.kubeconfig),
            "api_url": self.api_url,
            "bin_dir": str(self.bin_dir),
            "binaries": {name: str(path) for name, path in self.binaries.items()},
            "node_name": self.node_name,
            "etcd_dir": str(self.etcd_dir),
            "components": [asdict(c) for c in self.components],
        }
        (self.state_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def attach(cls, state_dir: Path) -> Cluster | None:
        """The cluster recorded in state_dir, or None when there is none."""
        try:
            state = json.loads((state_dir / STATE_FILE).read_text())
        except FileNotFoundError:
            return None
        return cls(
            state_dir=state_dir,
            kubeconfig=Path(state["kubeconfig"]),
            api_url=state["api_url"],
            bin_dir=Path(state["bin_dir"]),
            binaries={name: Path(path) for name, path in state["binaries"].items()},
            node_name=state["node_name"],
            etcd_dir=Path(state["etcd_dir"]),
            components=[Component(**c) for c in state["components"]],
        )


class _DiedError(Exception):
    """A component exited while we waited for it (internal to Cluster._wait)."""

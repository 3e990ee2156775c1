"""``python -m tests.cluster up|down|env``: the test control plane by hand.

Why: to poke at the same cluster the tests use (kubectl, helm, the operator run from a shell)
without writing a test. ``up`` builds the binaries if needed (cached after the first time),
starts the cluster in the background and prints ``export KUBECONFIG=...``; ``env`` prints that
again plus a PATH with our kubectl and helm first; ``down`` stops exactly the processes ``up``
started (their PIDs are in ``<dir>/state.json``).

The state dir is ``$SIGRUN_CLUSTER_DIR`` or ``/tmp/sigrun-cluster``; ``--dir`` overrides both.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.cluster import agent
from tests.cluster.controlplane import STATE_FILE, Cluster, ControlPlaneError, resolve_binaries


def default_dir() -> Path:
    env = os.environ.get("SIGRUN_CLUSTER_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / "sigrun-cluster"


def _exports(cluster: Cluster) -> str:
    dirs = dict.fromkeys(str(cluster.binaries[name].parent) for name in ("kubectl", "helm"))
    path = os.pathsep.join(dirs)
    return (
        f"export KUBECONFIG={shlex.quote(str(cluster.kubeconfig))}\n"
        f'export PATH={shlex.quote(path)}:"$PATH"'
    )


def up(state_dir: Path) -> int:
    existing = Cluster.attach(state_dir)
    if existing is not None:
        if existing.is_running():
            print(f"# already running: {existing.api_url}", file=sys.stderr)
            print(_exports(existing))
            return 0
        existing.stop()  # stale: processes gone (reboot, kill); clean what is left
    if state_dir.exists():
        if any(state_dir.iterdir()) and not (state_dir / "pki").is_dir():
            print(
                f"{state_dir} exists and is not a cluster state dir; not touching it",
                file=sys.stderr,
            )
            return 2
        shutil.rmtree(state_dir)
    bin_dir, binaries = resolve_binaries(build=True)
    started = time.monotonic()
    cluster = Cluster.start(state_dir, bin_dir=bin_dir, binaries=binaries)
    print(
        f"# cluster ready in {time.monotonic() - started:.1f} s: {cluster.api_url}"
        f" (node {cluster.node_name}); stop it with: python -m tests.cluster down",
        file=sys.stderr,
    )
    steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in cluster.timings.items())
    print(f"# ready after: {steps}", file=sys.stderr)
    print(_exports(cluster))
    return 0


def down(state_dir: Path) -> int:
    cluster = Cluster.attach(state_dir)
    if cluster is None:
        print(f"# no cluster recorded in {state_dir / STATE_FILE}", file=sys.stderr)
        return 0
    peaks = cluster.stop()
    for name, kib in sorted(peaks.items()):
        print(f"# peak RSS {name}: {kib / 1024:.0f} MiB", file=sys.stderr)
    if peaks:
        print(f"# peak RSS total: {sum(peaks.values()) / 1024:.0f} MiB", file=sys.stderr)
    print(f"# stopped; logs kept in {cluster.log_dir}", file=sys.stderr)
    return 0


def env(state_dir: Path) -> int:
    cluster = Cluster.attach(state_dir)
    if cluster is None or not cluster.is_running():
        print(
            f"# no running cluster in {state_dir}; run: python -m tests.cluster up", file=sys.stderr
        )
        return 1
    print(_exports(cluster))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["agent"]:
        return agent.main(args[1:])
    parser = argparse.ArgumentParser(
        prog="python -m tests.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["up", "down", "env"])
    parser.add_argument("--dir", type=Path, default=None, help="state dir (see above)")
    parsed = parser.parse_args(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    state_dir: Path = (parsed.dir or default_dir()).resolve()
    commands = {"up": up, "down": down, "env": env}
    try:
        return commands[parsed.command](state_dir)
    except ControlPlaneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

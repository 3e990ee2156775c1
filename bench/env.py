"""Where the benchmark runs: paths, the machine, versions, and the peers' own virtualenv.

The peers (RQ, Celery) are installed into a virtualenv of their own, never into
sigrun's: ``~/.cache/sigrun/bench-peers/<python>-<pins hash>``, made (by this
module, with pip) the first time and reused after, or one given with
``--peers-python``.  Versions are pinned so that published figures can be
reproduced.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
JOBMODS = BENCH / "jobmods"
PEERS = BENCH / "peers"

#: What the peers' virtualenv holds; bump deliberately, the figures depend on it.
PEER_PINS = ("rq==2.12.0", "celery[redis]==5.7.0", "redis==8.1.0")


@dataclass(frozen=True)
class PeerEnv:
    python: str
    versions: dict[str, str] = field(default_factory=dict)


def peer_env(explicit: str | None, log: object = print) -> PeerEnv:
    """The peers' Python: the given one, or the cached virtualenv (made if missing)."""
    if explicit:
        python = explicit
    else:
        tag = hashlib.sha1(" ".join(PEER_PINS).encode()).hexdigest()[:10]
        venv = (
            Path.home()
            / ".cache/sigrun/bench-peers"
            / f"py{sys.version_info[0]}{sys.version_info[1]}-{tag}"
        )
        python = str(venv / "bin/python")
        marker = venv / ".installed"
        if not marker.exists():
            log(f"bench: installing {', '.join(PEER_PINS)} into {venv} (once)")  # type: ignore[operator]
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run(
                [
                    python,
                    "-P",
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    *PEER_PINS,
                ],
                check=True,
            )
            marker.touch()
    probe = (
        "import json, importlib.metadata as m;"
        "print(json.dumps({p: m.version(p)"
        " for p in ('rq', 'celery', 'kombu', 'billiard', 'redis')}))"
    )
    out = subprocess.run([python, "-P", "-c", probe], check=True, capture_output=True, text=True)
    return PeerEnv(python=python, versions=json.loads(out.stdout))


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_before": os.getloadavg()[0],
    }


def versions() -> dict[str, str]:
    """sigrun's commit and library versions, and redis-server's."""
    from importlib import metadata  # noqa: PLC0415

    found = {"redis-py": metadata.version("redis"), "sigrun": metadata.version("sigrun")}
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "runner", "bench"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        found["commit"] = head + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        found["commit"] = "unknown"
    try:
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout
        found["redis-server"] = next(
            (w.split("=", 1)[1] for w in out.split() if w.startswith("v=")), out.strip()
        )
    except OSError:
        found["redis-server"] = "not found"
    return found

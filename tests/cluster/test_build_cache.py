"""A second start reuses the cached binaries: the build script never calls go again.

Why: the cold build costs minutes of CPU and gigabytes of Go caches; every later test session
and every `python -m tests.cluster up` must start from the cache. A fake `go` that records
being called proves it, rather than a timing guess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster.controlplane import BUILD_SCRIPT, REPO_ROOT, Cluster

pytestmark = pytest.mark.cluster


def _env_with_fake_go(tmp_path: Path) -> tuple[dict[str, str], Path]:
    marker = tmp_path / "go-was-called"
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    fake_go = fake_bin / "go"
    fake_go.write_text(f'#!/bin/sh\necho "$@" >> {marker}\nexit 1\n')
    fake_go.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{fake_bin}{os.pathsep}{env.get('PATH', '')}"
    env["GO"] = str(fake_go)
    return env, marker


def test_build_script_says_cached_and_does_not_call_go(cluster: Cluster, tmp_path: Path) -> None:
    env, marker = _env_with_fake_go(tmp_path)
    started = time.monotonic()
    result = subprocess.run(
        [str(BUILD_SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    elapsed = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    assert "cached" in result.stderr
    assert not marker.exists(), marker.read_text()
    assert result.stdout.strip().splitlines()[-1] == str(cluster.bin_dir)
    assert elapsed < 10


def test_second_cluster_start_reuses_the_cache(tmp_path: Path) -> None:
    env, marker = _env_with_fake_go(tmp_path)
    state_dir = tmp_path / "second"
    command = [sys.executable, "-m", "tests.cluster"]
    try:
        up = subprocess.run(
            [*command, "up", f"--dir={state_dir}"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert up.returncode == 0, up.stderr
        assert "cached" in up.stderr
        assert f"export KUBECONFIG={state_dir / 'kubeconfig'}" in up.stdout
        assert not marker.exists(), marker.read_text()

        second = Cluster.attach(state_dir)
        assert second is not None
        assert second.is_running()
        assert second.kubectl("get", "--raw=/readyz").stdout == "ok"
    finally:
        subprocess.run(
            [*command, "down", f"--dir={state_dir}"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert Cluster.attach(state_dir) is None

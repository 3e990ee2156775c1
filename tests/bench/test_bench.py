"""A smoke run of the benchmark code: every scenario, tiny sizes, sigrun and the bare loop.

The peers (RQ, Celery) need their own virtualenv from PyPI, which CI must not
depend on; their drivers are exercised by the full run (``python -m bench``).
The operator scenario runs too (two trials each): it needs the control-plane
binaries, which CI builds before the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.redisproxy import RespCommands
from bench.report import percentile, ratios
from tests.conftest import REPO


@pytest.mark.cluster  # the operator scenario starts the local control plane
def test_quick_run_writes_the_report_and_its_json(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(REPO / "bench/run"), "--quick", "--no-peers", "--out", str(tmp_path)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "BENCHMARKS.json").read_text())
    assert [s["id"] for s in results["throughput"]] == [
        "noop-c1", "noop-c2", "realistic-c1", "realistic-c2",
    ]  # fmt: skip
    for scenario in results["throughput"]:
        assert set(scenario["values"]) == {"sigrun", "sigrun-no-preload", "bare"}
        assert all(v > 0 for values in scenario["values"].values() for v in values)
    # Where the CPU goes: sigrun's fork server is told apart from its runner and children
    # (the bare loop has none), and every fork took page faults in the child.
    for split in results["throughput"][1]["split"]["sigrun"]:
        assert split["fork server"][0] > 0 and split["children"][1] > 0
    assert all(
        split["fork server"] == [0, 0] for split in results["throughput"][1]["split"]["bare"]
    )
    floor = {case["key"]: case["runs"][0] for case in results["fork_floor"]}
    assert set(floor) == {"bare", "fork-server", "fork-server-touch", "runner"}
    assert floor["fork-server-touch"]["child_faults"] >= floor["fork-server"]["child_faults"] + 256
    assert floor["runner"]["rss_kib"] > floor["fork-server"]["rss_kib"] > floor["bare"]["rss_kib"]
    assert results["cost"]["values"]["bare"]["commands"] == pytest.approx(3, abs=0.5)
    assert results["latency"]["values"]["sigrun"]["start"]
    assert results["memory"]["idle"] and results["memory"]["after"]
    operator = results["operator"]
    assert set(operator["scenarios"]) == {"backlog", "oom", "heartbeat"}
    for scenario in operator["scenarios"].values():
        assert len(scenario["seconds"]) == 2
        assert all(s > 0 for s in scenario["seconds"])
        assert 0 < scenario["p50"] <= scenario["p95"] <= scenario["max"]
    # The lost runner's job waits for its heartbeat to expire: never sooner than most of the TTL.
    assert min(operator["scenarios"]["heartbeat"]["seconds"]) > operator["heartbeat_ttl"] / 2
    report = (tmp_path / "BENCHMARKS.md").read_text()
    for heading in ("## Targets", "## Throughput", "## Pickup latency", "## Redis cost per job",
                    "## Runner memory", "## Operator reaction", "## Where a no-op job's CPU goes",
                    "## How the operator scenarios are driven"):  # fmt: skip
        assert heading in report
    assert "Operator scenarios — TODO" not in report
    assert "operator: backlog to scale-up p95 under 3 s" in report


@pytest.mark.parametrize(
    ("chunks", "commands"),
    [
        ([b"*1\r\n$4\r\nPING\r\n"], 1),
        ([b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n"], 2),  # a pipeline
        ([b"*2\r\n$3\r\nGE", b"T\r\n$1\r\n", b"k\r\n"], 1),  # split anywhere
        ([b"*2\r\n$3\r\nSET\r\n$4\r\na\r\nb\r\n"], 1),  # CRLF inside a value
        ([b"*2\r\n$3\r\nSET\r\n$4\r\na\r\n"], 0),  # not complete yet
        ([b"PING\r\n"], 1),  # inline
    ],
)
def test_proxy_counts_whole_commands(chunks: list[bytes], commands: int) -> None:
    counter = RespCommands()
    assert sum(counter.feed(chunk) for chunk in chunks) == commands


def test_percentiles_and_per_round_ratios() -> None:
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile([1, 2], 99) == pytest.approx(1.99)
    assert ratios({"a": [2.0, 4.0], "b": [1.0, 2.0]}, "a", "b") == [2.0, 2.0]

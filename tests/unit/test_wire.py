"""The runner <-> fork server messages, and what the fork server must never import."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sigrun.runner import wire
from sigrun.runner.cgroup import MemoryCgroup
from sigrun.runner.exits import Ending, KillReason
from sigrun.runner.jobs import Cause, ChildReport
from sigrun.runner.supervision import SupervisorConfig


@pytest.mark.parametrize(
    "ending",
    [
        Ending(pid=7, wait_status=0, peak_rss_bytes=1 << 20, runtime_seconds=0.01,
               report=ChildReport(ok=True, result={"rows": [1, 2]})),
        Ending(pid=8, wait_status=256, peak_rss_bytes=None, runtime_seconds=2.5,
               report=ChildReport(ok=False, cause=Cause.EXCEPTION, exc_type="ValueError",
                                  exc_message="bad ü", traceback="Traceback ...")),
        Ending(pid=9, wait_status=signal.SIGKILL, peak_rss_bytes=64 << 20, runtime_seconds=41.2,
               oom_kills=1, killed_by=KillReason.TIMEOUT, memory_limit_bytes=256 << 20,
               timeout_seconds=30.0, grace_seconds=None, last_words=("loading", "loaded 3.1M")),
    ],
)  # fmt: skip
def test_ending_round_trips_through_a_message(ending: Ending) -> None:
    line = wire.encode({"ev": "ended", "ref": 1, "ending": wire.ending_to_json(ending)})
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert wire.ending_from_json(wire.decode(line)["ending"]) == ending


def test_a_result_that_json_refuses_is_kept_as_its_repr() -> None:
    ending = Ending(
        pid=1, wait_status=0, peak_rss_bytes=None, runtime_seconds=0.0,
        report=ChildReport(ok=True, result=float("nan")),
    )  # fmt: skip
    body = wire.decode(wire.encode(wire.ending_to_json(ending)))
    assert wire.ending_from_json(body).report == ChildReport(ok=True, result="nan")


def test_config_round_trips_with_the_path_and_preload() -> None:
    config = SupervisorConfig(
        allowed_modules=("jobs.", "tests.kernel.jobs"),
        default_timeout=12.5,
        last_words_lines=7,
        child_cgroup=MemoryCgroup(Path("/sys/fs/cgroup/x"), 2),
        child_oom_score_adj=None,
        forward_output=False,
        child_faulthandler=False,
    )
    body = wire.decode(
        wire.encode(wire.config_to_json(config, sys_path=["/a", "/b"], preload=True))
    )
    assert wire.config_from_json(body) == (config, ["/a", "/b"], True)


def test_lines_are_cut_at_newlines_across_chunks() -> None:
    lines = wire.Lines()
    assert lines.feed(b'{"a":') == []
    assert lines.feed(b'1}\n{"b":2}\n{"c"') == [b'{"a":1}', b'{"b":2}']
    assert lines.feed(b":3}\n") == [b'{"c":3}']


def _loaded(module: str, candidates: tuple[str, ...]) -> list[str]:
    """Which of ``candidates`` a fresh interpreter has loaded after importing ``module``."""
    probe = (
        f"import sys, json, {module};"
        f"print(json.dumps(sorted(m for m in {candidates!r} if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", probe], capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(out.stdout)
    return loaded


def test_the_fork_server_imports_no_asyncio_threading_logging_or_redis() -> None:
    """Every child is forked from it: each of these would make every fork dearer."""
    assert _loaded("sigrun.runner.forkserver", ("asyncio", "threading", "logging", "redis")) == []


def test_the_fork_server_imports_nothing_only_the_runner_needs() -> None:
    """Its spare child shares its memory, so each module it loads counts in an idle runner."""
    assert _loaded("sigrun.runner.forkserver", ("uuid", "argparse", "sigrun.runner.client")) == []


def test_the_runner_does_not_load_the_fork_code_it_hands_to_the_fork_server() -> None:
    """The default runner forks nothing itself; that code would be memory spent twice."""
    forking = ("sigrun.runner.children", "sigrun.runner.execute", "sigrun.runner.supervise")
    assert _loaded("sigrun.runner.worker, sigrun.runner.cli", forking) == []

"""The README's first command: ``sigrun demo`` replays the seed story with a real OOM killer."""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_sigrun

pytestmark = pytest.mark.kernel


@pytest.mark.timeout(300)
def test_demo_shows_one_hour_windows_oom_killed_and_quarter_hours_passing() -> None:
    out = run_sigrun("demo", timeout=280).stdout
    assert "memory cgroup" in out and "limit 256Mi" in out
    run1 = re.search(r"=> (\d+) of 12 windows succeeded, (\d+) died as DirtyExit OOMKilled", out)
    assert run1, out
    succeeded, oom_killed = map(int, run1.groups())
    assert oom_killed >= 1 and succeeded + oom_killed == 12, out
    assert re.search(
        r"pid \d+ SIGKILL \(signal 9\): OOMKilled — memory limit 256Mi, peak \d+Mi", out
    )
    assert "last words of" in out and "loading window" in out
    assert "=> 48 of 48 windows succeeded, 0 died as DirtyExit OOMKilled" in out

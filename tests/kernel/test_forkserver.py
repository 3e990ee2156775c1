"""The fork server: real children forked from a second process, judged as the runner's own.

The runner uses it by default (``sigrun work``), so the whole suite exercises it
through the CLI too; these tests pin down its own promises.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from sigrun.runner.exits import Ending, KillReason, classify
from sigrun.runner.forkclient import ForkServer, ForkServerLost
from sigrun.runner.jobs import Cause, Outcome
from sigrun.runner.supervise import SupervisorConfig
from tests.kernel.support import ALLOWED, make_job, open_fds, process_is_gone

T = TypeVar("T")
OURS = ("tests.kernel.jobs", "tests.kernel.forkserver_jobs")


def served(
    scenario: Callable[[ForkServer], Awaitable[T]],
    *,
    allowed: tuple[str, ...] = OURS,
    preload: bool = False,
    **config: object,
) -> T:
    """Run ``scenario`` against a started fork server, stopped afterwards."""

    async def main() -> T:
        server = ForkServer(SupervisorConfig(allowed_modules=allowed, **config), preload=preload)  # type: ignore[arg-type]
        await server.start()
        try:
            return await scenario(server)
        finally:
            await server.close()

    return asyncio.run(main())


def run_one(func: str, *args: object, timeout: float | None = None, **config: object) -> Ending:
    job = make_job(func, *args, timeout=timeout)  # type: ignore[arg-type]
    return served(lambda server: server.run(job), **config)


@pytest.mark.parametrize(
    ("func", "args", "outcome", "cause"),
    [
        ("add", (2, 3), Outcome.SUCCEEDED, None),
        ("boom", ("no rows",), Outcome.FAILED, Cause.EXCEPTION),
        ("exit_with", (3,), Outcome.FAILED, Cause.EXIT_CODE),
        ("kill_self", ("SIGKILL",), Outcome.DIRTY, Cause.SIGNAL),
        ("abort", (), Outcome.DIRTY, Cause.CRASH),
        ("add", (1,), Outcome.FAILED, Cause.BAD_ARGUMENTS),
        ("no_such_job", (), Outcome.FAILED, Cause.FUNCTION_NOT_FOUND),
        ("os:getpid", (), Outcome.FAILED, Cause.FUNCTION_NOT_ALLOWED),
    ],
)
def test_every_ending_is_classified_as_the_in_process_supervisor_does(
    func: str, args: tuple[object, ...], outcome: Outcome, cause: Cause | None
) -> None:
    verdict = classify(run_one(func, *args))
    assert (verdict.outcome, verdict.cause) == (outcome, cause), verdict.message


def test_result_and_last_words_come_back_whole() -> None:
    ending = run_one("say_then_die", "loading 2024-01-01T00", "loaded 3.1M rows")
    assert ending.last_words == ("loading 2024-01-01T00", "loaded 3.1M rows")
    big = run_one("big_result", 3 << 20)
    assert big.report is not None and big.report.result == "x" * (3 << 20)


def test_a_process_a_job_left_behind_is_adopted_and_reaped_not_left_a_zombie(
    tmp_path: Path,
) -> None:
    # In a container the runner is PID 1 and would never reap it: the fork server does.
    where = tmp_path / "orphan"

    async def scenario(server: ForkServer) -> None:
        ending = await server.run(
            make_job("tests.kernel.forkserver_jobs:leave_orphan", str(where), 1.0)
        )
        assert ending.report is not None and ending.report.ok
        orphan = int(where.read_text())
        assert _parent_of(orphan) == server.pid  # adopted, not handed to PID 1
        deadline = time.monotonic() + 12
        while Path(f"/proc/{orphan}").exists():  # a zombie keeps its /proc entry
            assert time.monotonic() < deadline, f"pid {orphan} was never reaped"
            await asyncio.sleep(0.1)

    served(scenario)


def _parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("PPid:")).split()[1])


def test_children_are_forked_by_the_fork_server_not_by_the_runner() -> None:
    async def scenario(server: ForkServer) -> None:
        ending = await server.run(make_job("tests.kernel.forkserver_jobs:whoami"))
        assert ending.report is not None and isinstance(ending.report.result, dict)
        assert ending.report.result["ppid"] == server.pid != os.getpid()

    served(scenario)


def test_preload_imports_the_job_module_in_the_fork_server_once() -> None:
    async def scenario(server: ForkServer) -> list[object]:
        results = []
        for _ in range(3):
            ending = await server.run(make_job("tests.kernel.forkserver_jobs:whoami"))
            assert ending.report is not None and isinstance(ending.report.result, dict)
            results.append(ending.report.result["imported_by"])
        assert results[-1] == server.pid  # later children inherit the fork server's import
        return results

    served(scenario, preload=True)


def test_a_preload_that_blocks_is_abandoned_and_the_runner_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario(server: ForkServer) -> tuple[Ending, Ending, float]:
        started = time.monotonic()
        blocked = await server.run(make_job("tests.kernel.preload_blocks:run", timeout=1))
        fine = await server.run(make_job("add", 2, 3))
        return blocked, fine, time.monotonic() - started

    blocked, fine, seconds = served(scenario, preload=True, allowed=("tests.kernel.",))
    # The import is given 5s in the fork server, then each job imports it on its own clock.
    assert classify(blocked).cause is Cause.TIMEOUT
    assert fine.report is not None and fine.report.result == 5
    assert seconds < 15
    assert any("preloading module 'tests.kernel.preload_blocks' failed" in r.message
               for r in caplog.records)  # fmt: skip


@pytest.mark.parametrize(
    ("module", "warning"),
    [
        ("preload_noisy", "printed while preloading: noisy: connected to the warehouse"),
        ("preload_threaded", "left 1 thread(s) running in the fork server"),
    ],
)
def test_what_a_preloaded_module_does_at_import_is_reported_as_a_warning(
    caplog: pytest.LogCaptureFixture, module: str, warning: str
) -> None:
    ending = run_one(f"tests.kernel.{module}:run", preload=True, allowed=("tests.kernel.",))
    assert ending.report is not None and ending.report.result == "ok"
    assert any(warning in r.message for r in caplog.records), [r.message for r in caplog.records]


def test_without_preload_the_fork_server_never_imports_job_code() -> None:
    async def scenario(server: ForkServer) -> None:
        for _ in range(3):
            ending = await server.run(make_job("tests.kernel.forkserver_jobs:whoami"))
            assert ending.report is not None and isinstance(ending.report.result, dict)
            assert ending.report.result["imported_by"] == ending.report.result["pid"]

    served(scenario)


def test_without_preload_a_child_imports_only_its_own_jobs_module() -> None:
    # Importing the last jobs' modules ahead would charge their import to this job's clock.
    async def scenario(server: ForkServer) -> None:
        for _ in range(2):
            assert (await server.run(make_job("tests.kernel.jobs:add", 1, 2))).report is not None
        ending = await server.run(
            make_job("tests.kernel.forkserver_jobs:loaded", "tests.kernel.jobs")
        )
        assert ending.report is not None and ending.report.result is False

    served(scenario)


def test_coroutine_jobs_are_awaited_again_and_again() -> None:
    async def scenario(server: ForkServer) -> list[object]:
        endings = [
            await server.run(make_job("tests.kernel.forkserver_jobs:asleep_then", i))
            for i in range(3)
        ]
        return [e.report.result if e.report else None for e in endings]

    assert served(scenario) == [0, 1, 2]


def test_a_job_bigger_than_a_pipe_still_runs() -> None:
    assert run_one("tests.kernel.forkserver_jobs:length", "x" * 200_000).report.result == 200_000  # type: ignore[union-attr]


def test_timeout_is_enforced_by_the_fork_server() -> None:
    started = time.monotonic()
    ending = run_one("sleep", 60, timeout=0.3)
    assert time.monotonic() - started < 10
    assert classify(ending).cause is Cause.TIMEOUT
    assert ending.killed_by is KillReason.TIMEOUT and ending.timeout_seconds == 0.3


def test_kill_all_at_shutdown_is_dirty_shutdown_with_the_grace_period() -> None:
    async def scenario(server: ForkServer) -> None:
        job = make_job("sleep", 60)
        task = asyncio.create_task(server.run(job))
        await _until(lambda: job.id in server.running)
        await asyncio.sleep(0.2)
        server.kill_all(KillReason.SHUTDOWN, grace_seconds=25)
        verdict = classify(await task)
        assert verdict.cause is Cause.SHUTDOWN
        assert "its 25s grace period ran out" in verdict.message
        assert server.running == {}

    served(scenario)


def test_output_is_logged_in_the_runner_with_job_id_and_queue(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sigrun.job")
    job = make_job("shout", 3)

    async def scenario(server: ForkServer) -> Ending:
        return await server.run(job)

    ending = served(scenario)
    lines = [r for r in caplog.records if r.name == "sigrun.job"]
    assert [r.getMessage() for r in lines] == ["line 0", "line 1", "line 2"]
    assert {(r.__dict__["job_id"], r.__dict__["queue"]) for r in lines} == {(job.id, "kernel")}
    assert ending.last_words == ("line 0", "line 1", "line 2")


def test_cancelled_run_kills_the_child(tmp_path: Path) -> None:
    marker = tmp_path / "pid"

    async def scenario(server: ForkServer) -> None:
        task = asyncio.create_task(server.run(make_job("sleep", 60, marker=str(marker))))
        await _until(lambda: marker.exists() and marker.read_text() != "")
        pid = int(marker.read_text())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _until(lambda: process_is_gone(pid))

    served(scenario)


def test_a_dead_fork_server_fails_running_and_later_jobs() -> None:
    async def scenario(server: ForkServer) -> None:
        job = make_job("sleep", 60)
        task = asyncio.create_task(server.run(job))
        await _until(lambda: job.id in server.running)
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        with pytest.raises(ForkServerLost):
            await task
        with pytest.raises(ForkServerLost):
            await server.run(make_job("add", 1, 2))
        assert server.running == {}

    served(scenario)


def test_no_fd_leak_in_the_runner_over_100_jobs() -> None:
    async def scenario(server: ForkServer) -> int:
        await server.run(make_job("noop"))
        before = open_fds()
        kinds = ["noop", "boom", "kill_self", "exit_with"]
        args: dict[str, tuple[object, ...]] = {
            "boom": ("x",),
            "kill_self": ("SIGKILL",),
            "exit_with": (2,),
        }
        for i in range(100):
            kind = kinds[i % len(kinds)]
            await server.run(make_job(kind, *args.get(kind, ())))
        return open_fds() - before

    assert served(scenario, allowed=ALLOWED) == 0


async def _until(condition: Callable[[], object], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)

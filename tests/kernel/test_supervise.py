"""Real children, real signals: each way a job can end, as the user will read it.

No root needed here; the OOM kill inside a memory cgroup is in test_oom.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sigrun.runner.exits import KillReason, classify
from sigrun.runner.jobs import Cause, Outcome
from sigrun.runner.supervise import Supervisor, SupervisorConfig
from tests.kernel.support import ALLOWED, make_job, open_fds, process_is_gone, run_job

# --- returned / raised -------------------------------------------------------------


def test_returned_value_is_succeeded_with_the_result() -> None:
    ending, verdict = run_job("add", 2, 3)
    assert verdict.outcome is Outcome.SUCCEEDED
    assert verdict.cause is None
    assert verdict.exit_code == 0
    assert verdict.signal is None
    assert ending.report is not None and ending.report.result == 5
    assert ending.peak_rss_bytes is not None and ending.peak_rss_bytes > 1 << 20
    assert ending.runtime_seconds < 10


def test_keyword_arguments_reach_the_job() -> None:
    ending, verdict = run_job("add", 2, b=40)
    assert verdict.outcome is Outcome.SUCCEEDED
    assert ending.report is not None and ending.report.result == 42


def test_async_job_is_awaited() -> None:
    ending, verdict = run_job("async_add", 20, 22)
    assert verdict.outcome is Outcome.SUCCEEDED
    assert ending.report is not None and ending.report.result == 42


def test_sync_job_may_run_its_own_event_loop_after_fork() -> None:
    ending, verdict = run_job("runs_its_own_loop", 1, 2)
    assert verdict.outcome is Outcome.SUCCEEDED, verdict.message
    assert ending.report is not None and ending.report.result == 3


def test_result_that_is_not_json_is_kept_as_repr() -> None:
    ending, verdict = run_job("unserialisable")
    assert verdict.outcome is Outcome.SUCCEEDED
    assert ending.report is not None and ending.report.result == "{1, 2, 3}"


def test_result_larger_than_a_pipe_buffer_arrives_whole() -> None:
    size = 3 << 20
    ending, verdict = run_job("big_result", size)
    assert verdict.outcome is Outcome.SUCCEEDED
    assert ending.report is not None and ending.report.result == "x" * size


def test_raised_exception_is_failed_with_type_message_and_traceback() -> None:
    ending, verdict = run_job("boom", "window 03:00 has no rows")
    assert verdict.outcome is Outcome.FAILED
    assert verdict.cause is Cause.EXCEPTION
    assert verdict.message == "ValueError: window 03:00 has no rows"
    assert verdict.exit_code == 1
    assert verdict.signal is None
    assert ending.report is not None
    assert ending.report.exc_type == "ValueError"
    assert "Traceback (most recent call last)" in ending.report.traceback
    assert "in boom\n    raise ValueError(message)" in ending.report.traceback


def test_type_error_inside_the_job_is_an_exception_not_bad_arguments() -> None:
    _, verdict = run_job("type_error_inside", 1)
    assert verdict.outcome is Outcome.FAILED
    assert verdict.cause is Cause.EXCEPTION
    assert verdict.message.startswith("TypeError: unsupported operand type(s) for +")


# --- could not start ---------------------------------------------------------------


def test_missing_argument_is_bad_arguments() -> None:
    _, verdict = run_job("add", 1)
    assert verdict.outcome is Outcome.FAILED
    assert verdict.cause is Cause.BAD_ARGUMENTS
    assert verdict.message == (
        "BadArguments: tests.kernel.jobs:add(a: 'int', b: 'int') -> 'int':"
        " missing a required argument: 'b'"
    )
    assert verdict.exit_code == 1


def test_unexpected_keyword_is_bad_arguments() -> None:
    _, verdict = run_job("add", 1, 2, c=3)
    assert verdict.cause is Cause.BAD_ARGUMENTS
    assert "got an unexpected keyword argument 'c'" in verdict.message


def test_unknown_module_is_function_not_found() -> None:
    _, verdict = run_job("tests.kernel.jobs_missing:run", config=_config(("tests.kernel.",)))
    assert verdict.outcome is Outcome.FAILED
    assert verdict.cause is Cause.FUNCTION_NOT_FOUND
    assert verdict.message.startswith(
        "FunctionNotFound: no module named 'tests.kernel.jobs_missing' (the runner imports job "
        "modules from its --path folders"
    )


def test_missing_attribute_is_function_not_found() -> None:
    _, verdict = run_job("no_such_job")
    assert verdict.cause is Cause.FUNCTION_NOT_FOUND
    assert verdict.message == "FunctionNotFound: 'tests.kernel.jobs' has no attribute 'no_such_job'"


def test_module_outside_the_allow_list_is_function_not_allowed() -> None:
    _, verdict = run_job("os:getpid")
    assert verdict.outcome is Outcome.FAILED
    assert verdict.cause is Cause.FUNCTION_NOT_ALLOWED
    assert verdict.message == (
        "FunctionNotAllowed: module 'os' is not in the runner's allowed modules"
        " ('tests.kernel.jobs')"
    )
    assert not verdict.cause.is_retryable


def test_empty_allow_list_refuses_everything() -> None:
    _, verdict = run_job("add", 1, 2, config=_config(()))
    assert verdict.cause is Cause.FUNCTION_NOT_ALLOWED
    assert verdict.message.endswith("allowed modules (none)")


# --- exited without a report ---------------------------------------------------------


def test_os_exit_nonzero_is_failed_exit_code() -> None:
    ending, verdict = run_job("exit_with", 3)
    assert verdict.outcome is Outcome.FAILED
    assert verdict.cause is Cause.EXIT_CODE
    assert verdict.exit_code == 3
    assert verdict.signal is None
    assert verdict.message.startswith(
        f"pid {ending.pid} exited with code 3 without reporting a result"
    )
    assert ending.report is None


def test_sys_exit_zero_is_failed_exit_code_zero() -> None:
    ending, verdict = run_job("sys_exit", 0)
    assert verdict.outcome is Outcome.FAILED
    assert verdict.cause is Cause.EXIT_CODE
    assert verdict.exit_code == 0
    assert "sys.exit(0) or os._exit(0) before returning" in verdict.message
    assert ending.report is None


def test_sys_exit_code_is_kept() -> None:
    _, verdict = run_job("sys_exit", 4)
    assert verdict.cause is Cause.EXIT_CODE
    assert verdict.exit_code == 4


# --- signals -------------------------------------------------------------------------


def test_sigkill_without_oom_counter_rise_is_signal() -> None:
    ending, verdict = run_job("kill_self", "SIGKILL")
    assert verdict.outcome is Outcome.DIRTY
    assert verdict.cause is Cause.SIGNAL
    assert verdict.signal == signal.SIGKILL
    assert verdict.signal_name == "SIGKILL"
    assert verdict.exit_code is None
    assert verdict.message.startswith(f"pid {ending.pid} SIGKILL (signal 9): Signal — ")
    # This machine has a memory cgroup, so the counter was read and did not rise.
    assert ending.oom_kills == 0
    assert "not by the OOM killer as far as the cgroup's oom_kill counter tells" in verdict.message


def test_sigterm_is_signal_with_its_name() -> None:
    ending, verdict = run_job("kill_self", "SIGTERM")
    assert verdict.outcome is Outcome.DIRTY
    assert verdict.cause is Cause.SIGNAL
    assert verdict.signal == signal.SIGTERM
    assert verdict.message.startswith(
        f"pid {ending.pid} SIGTERM (signal 15): Signal — killed by SIGTERM, peak "
    )


def test_sigint_is_keyboard_interrupt_in_the_job_like_any_python_program() -> None:
    """The runner's own SIGINT handling is not inherited: the job gets Python's default."""
    _, verdict = run_job("kill_self", "SIGINT")
    assert verdict.outcome is Outcome.FAILED
    assert verdict.cause is Cause.EXCEPTION
    assert verdict.message.startswith("KeyboardInterrupt")


def test_runner_signal_handlers_are_not_inherited_by_the_job() -> None:
    """The runner's asyncio handlers (SIGTERM, SIGINT) must neither protect the job nor
    fire in the runner when the job gets the signal."""
    fired: list[str] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, fired.append, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, fired.append, "SIGINT")
        try:
            supervisor = Supervisor(_config(ALLOWED))
            term = classify(await supervisor.run(make_job("kill_self", "SIGTERM")))
            intr = classify(await supervisor.run(make_job("kill_self", "SIGINT")))
            await asyncio.sleep(0.1)  # a stray wakeup byte would be handled by now
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            loop.remove_signal_handler(signal.SIGINT)
        assert (term.cause, term.signal) == (Cause.SIGNAL, signal.SIGTERM)
        assert (intr.cause, intr.message.split(":")[0]) == (Cause.EXCEPTION, "KeyboardInterrupt")

    asyncio.run(scenario())
    assert fired == []


def test_segfault_is_crash_with_the_python_stack_as_last_words() -> None:
    config = SupervisorConfig(allowed_modules=ALLOWED, last_words_lines=200)
    ending, verdict = run_job("segfault", config=config)
    assert verdict.outcome is Outcome.DIRTY
    assert verdict.cause is Cause.CRASH
    assert verdict.signal == signal.SIGSEGV
    assert verdict.message.startswith(
        f"pid {ending.pid} SIGSEGV (signal 11): Crash — invalid memory access (segmentation fault)"
    )
    assert "Fatal Python error: Segmentation fault" in ending.last_words
    assert any(line.endswith(" in segfault") for line in ending.last_words)


def test_abort_is_crash() -> None:
    ending, verdict = run_job("abort")
    assert verdict.cause is Cause.CRASH
    assert verdict.signal == signal.SIGABRT
    assert verdict.message.startswith(f"pid {ending.pid} SIGABRT (signal 6): Crash — aborted")


def test_last_words_are_what_the_child_printed_before_it_was_killed() -> None:
    ending, verdict = run_job("say_then_die", "loading 2024-01-01T00", "loaded 3.1M rows")
    assert verdict.cause is Cause.SIGNAL
    assert ending.last_words == ("loading 2024-01-01T00", "loaded 3.1M rows")


# --- the runner's own kills ----------------------------------------------------------


def test_job_past_its_timeout_is_killed_and_dirty_timeout() -> None:
    started = time.monotonic()
    ending, verdict = run_job("sleep", 60, timeout=0.5)
    assert time.monotonic() - started < 10
    assert verdict.outcome is Outcome.DIRTY
    assert verdict.cause is Cause.TIMEOUT
    assert verdict.signal == signal.SIGKILL
    assert ending.killed_by is KillReason.TIMEOUT
    assert 0.5 <= ending.runtime_seconds < 5
    assert verdict.message.startswith(
        f"pid {ending.pid} SIGKILL (signal 9): Timeout — exceeded its 0.5s timeout, peak "
    )
    assert ending.last_words == ("sleeping",)


def test_default_timeout_applies_when_the_job_has_none() -> None:
    config = SupervisorConfig(allowed_modules=ALLOWED, default_timeout=0.3)
    ending, verdict = run_job("sleep", 60, config=config)
    assert verdict.cause is Cause.TIMEOUT
    assert ending.timeout_seconds == 0.3
    assert "exceeded its 0.3s timeout" in verdict.message


def test_kill_all_at_shutdown_is_dirty_shutdown() -> None:
    async def scenario() -> None:
        supervisor = Supervisor(_config(ALLOWED))
        job = make_job("sleep", 60)
        task = asyncio.create_task(supervisor.run(job))
        await _until(lambda: job.id in supervisor.running)
        assert supervisor.running[job.id] > 0
        await asyncio.sleep(0.2)
        supervisor.kill_all(KillReason.SHUTDOWN, grace_seconds=25)
        ending = await task
        verdict = classify(ending)
        assert verdict.outcome is Outcome.DIRTY
        assert verdict.cause is Cause.SHUTDOWN
        assert verdict.message.startswith(
            f"pid {ending.pid} SIGKILL (signal 9): Shutdown — killed by the runner, which was"
            " shutting down and its 25s grace period ran out, peak "
        )
        assert supervisor.running == {}

    asyncio.run(scenario())


def test_cancelled_supervision_kills_and_reaps_the_child(tmp_path: Path) -> None:
    async def scenario(marker: Path) -> None:
        supervisor = Supervisor(_config(ALLOWED))
        task = asyncio.create_task(supervisor.run(make_job("sleep", 60, marker=str(marker))))
        await _until(marker.exists)
        pid = int(marker.read_text())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert supervisor.running == {}
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # already reaped by the supervisor

    before = open_fds()
    asyncio.run(scenario(tmp_path / "child.pid"))
    assert open_fds() == before


# --- process hygiene -----------------------------------------------------------------


def test_grandchild_left_behind_is_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    ending, verdict = run_job("spawn_grandchild", str(pidfile))
    assert verdict.outcome is Outcome.SUCCEEDED
    grandchild = int(pidfile.read_text())
    assert ending.report is not None and ending.report.result == grandchild
    deadline = time.monotonic() + 5
    while not process_is_gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process_is_gone(grandchild)


def test_escaped_grandchild_writing_forever_does_not_hang_the_runner(tmp_path: Path) -> None:
    pidfile = tmp_path / "yes.pid"
    config = SupervisorConfig(allowed_modules=ALLOWED, forward_output=False)
    started = time.monotonic()
    ending, verdict = run_job("escape_and_spam", str(pidfile), config=config)
    assert time.monotonic() - started < 30
    assert verdict.outcome is Outcome.SUCCEEDED
    assert set(ending.last_words) <= {"y"}
    # Its pipe was closed under it: the next write kills it with SIGPIPE.
    escaped = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not process_is_gone(escaped) and time.monotonic() < deadline:
        time.sleep(0.01)
    if not process_is_gone(escaped):  # pragma: no cover - clean up before failing
        os.kill(escaped, signal.SIGKILL)
        raise AssertionError("the escaped grandchild outlived its closed pipe")


def test_output_is_forwarded_to_the_job_logger_with_job_id_and_queue(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sigrun.job")
    job = make_job("shout", 3)
    ending = asyncio.run(Supervisor(_config(ALLOWED)).run(job))
    lines = [r for r in caplog.records if r.name == "sigrun.job"]
    assert [r.getMessage() for r in lines] == ["line 0", "line 1", "line 2"]
    assert {(r.__dict__["job_id"], r.__dict__["queue"]) for r in lines} == {(job.id, "kernel")}
    assert ending.last_words == ("line 0", "line 1", "line 2")


def test_output_larger_than_a_pipe_keeps_the_last_lines_and_does_not_block() -> None:
    config = SupervisorConfig(allowed_modules=ALLOWED, forward_output=False, last_words_lines=5)
    ending, verdict = run_job("shout", 100_000, config=config)
    assert verdict.outcome is Outcome.SUCCEEDED
    assert ending.last_words == tuple(f"line {i}" for i in range(99_995, 100_000))


def test_child_prefers_to_be_the_oom_killers_victim() -> None:
    ending, verdict = run_job("read_oom_score_adj")
    assert verdict.outcome is Outcome.SUCCEEDED, verdict.message
    assert ending.report is not None and ending.report.result == 1000


def test_concurrent_children_are_supervised_independently() -> None:
    async def scenario() -> None:
        supervisor = Supervisor(_config(ALLOWED))
        jobs = [make_job("add", i, 1) for i in range(3)] + [make_job("kill_self", "SIGKILL")]
        tasks = [asyncio.create_task(supervisor.run(j)) for j in jobs]
        await _until(lambda: len(supervisor.running) + sum(t.done() for t in tasks) == 4)
        endings = await asyncio.gather(*tasks)
        verdicts = [classify(e) for e in endings]
        assert [v.outcome for v in verdicts] == [Outcome.SUCCEEDED] * 3 + [Outcome.DIRTY]
        assert [e.report.result for e in endings[:3] if e.report] == [1, 2, 3]
        assert len({e.pid for e in endings}) == 4

    asyncio.run(scenario())


def test_no_fd_leak_over_200_jobs() -> None:
    kinds = [
        make_job("noop"),
        make_job("boom", "x"),
        make_job("kill_self", "SIGKILL"),
        make_job("exit_with", 2),
        make_job("sleep", 60, timeout=0.01),
    ]

    async def scenario() -> int:
        supervisor = Supervisor(_config(ALLOWED))
        await supervisor.run(make_job("noop"))  # the first run may open lasting fds (epoll)
        before = open_fds()
        for i in range(200):
            await supervisor.run(kinds[i % len(kinds)])
        return open_fds() - before

    assert asyncio.run(scenario()) == 0


def _config(allowed: tuple[str, ...]) -> SupervisorConfig:
    return SupervisorConfig(allowed_modules=allowed)


async def _until(condition: Callable[[], object], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)

"""Helpers for the kernel tests: run one job in a real child and classify its ending."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sigrun.runner.exits import Ending, classify
from sigrun.runner.jobs import JSON, Job, Verdict, new_job_id
from sigrun.runner.supervise import Supervisor, SupervisorConfig

ALLOWED = ("tests.kernel.jobs",)
JOBS = "tests.kernel.jobs"


def make_job(func: str, *args: JSON, timeout: float | None = None, **kwargs: JSON) -> Job:
    name = func if ":" in func else f"{JOBS}:{func}"
    return Job(
        id=new_job_id(), queue="kernel", func=name, args=args, kwargs=kwargs, timeout=timeout
    )


def run_job(
    func: str,
    *args: JSON,
    timeout: float | None = None,
    config: SupervisorConfig | None = None,
    **kwargs: JSON,
) -> tuple[Ending, Verdict]:
    """Fork a real child for ``func`` (a name in tests.kernel.jobs, or a full "mod:attr")."""
    supervisor = Supervisor(config or SupervisorConfig(allowed_modules=ALLOWED))
    ending = asyncio.run(supervisor.run(make_job(func, *args, timeout=timeout, **kwargs)))
    return ending, classify(ending)


def process_is_gone(pid: int) -> bool:
    """Dead: no such process, or a zombie waiting for whoever adopted it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return any(line.startswith("State:\tZ") for line in status.splitlines())


def open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())

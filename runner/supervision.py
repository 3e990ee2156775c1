"""What supervising a job's child means to the runner: its settings and its interface.

Kept apart from :mod:`sigrun.runner.children` (the fork, the pipes, ``wait4``)
so that a runner using the fork server, the default, never imports the code
that forks: that code runs in the fork server, and loading it in the runner too
would only cost the runner memory (the idle-runner target of BENCHMARKS.md).
Both implementations of :class:`JobSupervisor` -- the fork server's client
(:mod:`sigrun.runner.forkclient`) and the in-process
:class:`sigrun.runner.supervise.Supervisor` -- take a :class:`SupervisorConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from sigrun.runner.cgroup import MemoryCgroup
from sigrun.runner.errors import ConfigError
from sigrun.runner.exits import Ending, KillReason
from sigrun.runner.jobs import Job

__all__ = ["JobSupervisor", "SupervisorConfig"]


@dataclass(frozen=True)
class SupervisorConfig:
    """How children are started and watched; parsed once, validated here."""

    allowed_modules: tuple[str, ...]
    default_timeout: float | None = None
    last_words_lines: int = 20
    # Each child joins this cgroup right after fork, and the OOM counter is read
    # from it; None: children stay in the runner's cgroup, whose counter is read.
    child_cgroup: MemoryCgroup | None = None
    # Make the kernel OOM killer pick a child before the runner (raising it needs
    # no privilege).  None leaves it alone.
    child_oom_score_adj: int | None = 1000
    forward_output: bool = True
    # On SIGSEGV/SIGABRT/SIGBUS/SIGILL/SIGFPE the child writes its Python stack to
    # its output first, so a Crash comes with last words saying where.
    child_faulthandler: bool = True

    def __post_init__(self) -> None:
        if self.default_timeout is not None and not self.default_timeout > 0:
            raise ConfigError(f"default_timeout must be positive, got {self.default_timeout!r}")
        if self.last_words_lines < 0:
            raise ConfigError(f"last_words_lines must be >= 0, got {self.last_words_lines!r}")
        adj = self.child_oom_score_adj
        if adj is not None and not -1000 <= adj <= 1000:
            raise ConfigError(f"child_oom_score_adj must be in -1000..1000, got {adj!r}")


class JobSupervisor(Protocol):
    """What the worker needs from whoever forks and watches its children."""

    @property
    def running(self) -> Mapping[str, int]:
        """Job id -> pid of every child not yet reaped."""
        ...

    async def start(self) -> None: ...
    async def run(self, job: Job) -> Ending: ...
    def kill_all(self, reason: KillReason, *, grace_seconds: float | None = None) -> None: ...
    async def close(self) -> None: ...

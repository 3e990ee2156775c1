"""sigrun's runner: the client API, the Redis protocol and the fork-per-job worker.

Public surface (everything else is internal and may change)::

    from sigrun.runner import enqueue
    job_id = enqueue(redis, "imports", "jobs.imports:load_window", "2026-01-01T00:00")

This package never imports :mod:`sigrun.operator`.

The names below are imported on first use, not with the package: the fork
server (:mod:`sigrun.runner.forkserver`) imports modules of this package and
must stay lean -- no Redis client, no asyncio -- because every job is forked
from it and a bigger process forks slower.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sigrun.runner.client import enqueue
    from sigrun.runner.errors import SigrunError
    from sigrun.runner.jobs import Cause, Job, Outcome, State

__all__ = ["Cause", "Job", "Outcome", "SigrunError", "State", "enqueue"]

_HOMES = {
    "enqueue": "sigrun.runner.client",
    "SigrunError": "sigrun.runner.errors",
    "Cause": "sigrun.runner.jobs",
    "Job": "sigrun.runner.jobs",
    "Outcome": "sigrun.runner.jobs",
    "State": "sigrun.runner.jobs",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib  # noqa: PLC0415 - only on first use of a public name

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value

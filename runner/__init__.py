"""sigrun's runner: the client API, the Redis protocol and the fork-per-job worker.

Public surface (everything else is internal and may change)::

    from sigrun.runner import enqueue
    job_id = enqueue(redis, "imports", "jobs.imports:load_window", "2026-01-01T00:00")

This package never imports :mod:`sigrun.operator`.
"""

from sigrun.runner.client import enqueue
from sigrun.runner.errors import SigrunError
from sigrun.runner.jobs import Cause, Job, Outcome, State

__all__ = ["Cause", "Job", "Outcome", "SigrunError", "State", "enqueue"]

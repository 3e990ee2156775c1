"""The Celery app the benchmark's Celery worker runs: the shared jobs as tasks.

Defaults throughout (prefork pool, prefetch multiplier 4, early acknowledgement)
and a Redis broker from ``BENCH_REDIS_URL``.  No result backend (Celery's
default, and its fastest: nothing is written per task beyond the broker's
messages) unless ``BENCH_CELERY_RESULTS=1``: then the same Redis keeps each
task's state and result, as sigrun and RQ do.  ``bench/jobmods`` must be on
``sys.path`` (the benchmark sets ``PYTHONPATH``).
"""

from __future__ import annotations

import os

import benchjobs
from celery import Celery

_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
_results = os.environ.get("BENCH_CELERY_RESULTS") == "1"
app = Celery("bench", broker=_url, backend=_url if _results else None)
app.conf.broker_connection_retry_on_startup = True

noop = app.task(name="benchjobs.noop")(benchjobs.noop)
realistic = app.task(name="benchjobs.realistic")(benchjobs.realistic)
stamp = app.task(name="benchjobs.stamp")(benchjobs.stamp)

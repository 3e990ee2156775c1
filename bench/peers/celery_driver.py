"""Celery, from the client side: enqueue tasks, or time one task at a time.

Runs in the peers' virtualenv with ``bench/peers`` and ``bench/jobmods`` on
``PYTHONPATH``; the worker itself is ``celery -A celery_app worker``.

    enqueue URL SPEC      SPEC: JSON list of [task name, args, count], sent in order
    latency URL COUNT STAMPS GAP   one stamp task at a time; prints [[enqueued_at, null]...]
                          (no result backend, so the end of a task is not recorded)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    command, url, *rest = sys.argv[1:]
    os.environ["BENCH_REDIS_URL"] = url
    from celery_app import app  # noqa: PLC0415 - reads the URL at import

    if command == "enqueue":
        with app.producer_or_acquire() as producer:
            for name, args, count in json.loads(rest[0]):
                for _ in range(count):
                    app.send_task(name, args=args, producer=producer)
    elif command == "latency":
        count, stamps, gap = int(rest[0]), Path(rest[1]), float(rest[2])
        times = []
        for i in range(count):
            enqueued_at = time.time()
            app.send_task("benchjobs.stamp", args=[str(stamps)])
            while not stamps.exists() or len(stamps.read_bytes().splitlines()) <= i:
                time.sleep(0.0005)
            times.append([enqueued_at, None])
            time.sleep(gap)
        print(json.dumps(times))
    else:
        raise SystemExit(f"unknown command {command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

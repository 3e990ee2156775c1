"""The seed story as a job: import one window of a time series.

A window's memory grows with its length, so one-hour windows with several runners' children
in one 512Mi container get OOM-killed while 15-minute windows fit. Enqueue it with::

    sigrun enqueue imports jobs.imports:load_window 2026-01-01T00:00 60
    sigrun enqueue imports jobs.imports:load_window 2026-01-01T00:00 15

and watch ``kubectl describe jobqueue imports`` tell you which one died, and why.
"""

from __future__ import annotations

import datetime as dt
import time

MIB_PER_MINUTE = 4  # a one-hour window holds 240 MiB at its peak, a 15-minute one 60 MiB


def load_window(start: str, minutes: int) -> dict[str, object]:
    """Load ``minutes`` of data starting at ``start`` (ISO 8601); return what was loaded."""
    begin = dt.datetime.fromisoformat(start)
    end = begin + dt.timedelta(minutes=minutes)
    print(f"loading {begin:%Y-%m-%d %H:%M} to {end:%H:%M}", flush=True)
    rows = []
    for _ in range(minutes * MIB_PER_MINUTE):
        chunk = bytearray(1024 * 1024)
        for offset in range(0, len(chunk), 4096):  # touch every page: the memory is real
            chunk[offset] = 1
        rows.append(chunk)
        time.sleep(0.01)
    print(f"loaded {len(rows)} MiB", flush=True)
    return {"start": begin.isoformat(), "minutes": minutes, "mib": len(rows)}

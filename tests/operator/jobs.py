"""Job functions the operator tests enqueue (allowed prefix: ``tests.operator.jobs``).

They run inside real ``sigrun work`` stand-in runners; each writes its pid where the
test can find it, so a test can kill it the way the kernel's OOM killer would.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def hold(marker: str, release: str, megabytes: int = 0, limit: float = 110.0) -> str:
    """Write our pid to ``marker``, keep ``megabytes`` resident, wait for ``release`` to exist."""
    ballast = bytearray(megabytes * 1024 * 1024)
    for i in range(0, len(ballast), 4096):  # touch every page: resident, not just reserved
        ballast[i] = 1
    Path(marker).write_text(str(os.getpid()))
    deadline = time.monotonic() + limit
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return f"held {len(ballast)} bytes"


def noop() -> None:
    """A job that succeeds at once."""

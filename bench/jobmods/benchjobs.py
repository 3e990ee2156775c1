"""The jobs every contender runs, the same code for all (module ``benchjobs``).

This folder holds nothing but job modules: the benchmark puts it on each
worker's path (``sigrun work --path``, ``sys.path`` for RQ and Celery), never
the repository root, whose ``operator/`` folder would shadow the standard
library's ``operator``.  Plain functions, standard library only, so RQ and
Celery import them unchanged.
"""

from __future__ import annotations

import os
import time

#: Iterations of the CPU loop in :func:`realistic`: about 5 ms of one core of the
#: reference machine (2 vCPUs, Python 3.11); the work is fixed, not timed, so every
#: contender does the same amount.
CPU_LOOP = 120_000
#: Bytes :func:`realistic` allocates and touches.
ALLOCATE = 20 << 20


def noop() -> None:
    """Nothing at all: what is measured is the job runner itself."""


def realistic() -> int:
    """A small but real job: allocate (and touch) ~20 MB, then ~5 ms of CPU work."""
    block = b"\x01" * ALLOCATE  # bytes * n fills the memory, so every page is touched
    total = 0
    for i in range(CPU_LOOP):
        total += i * i % 7
    return total + len(block) % 3


def stamp(path: str) -> None:
    """Append the time this job started (wall clock) to ``path``: a start or end marker."""
    line = f"{time.time():.6f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)

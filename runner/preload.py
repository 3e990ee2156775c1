"""Importing a job's module in the fork server, so that its children start with it imported.

That runs the module's top-level code in the one process every child is forked from, so
what that code does matters more than it would in a child:

* an import that blocks (a database that does not answer) would block the fork server,
  and with it every job of the runner: the import is given :data:`PRELOAD_SECONDS`, then
  abandoned (its jobs import the module themselves, on their own clocks);
* a thread started at import does not exist in a forked child, and a lock it held stays
  locked there forever: the caller is told how many threads the import left running;
* what it prints would land, unlabelled, in the runner's log stream (one JSON object per
  line in a pod): it is captured and handed back as lines.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

#: How long a preload may take before it is abandoned.
PRELOAD_SECONDS = 5.0
_MAX_LINES = 20


class PreloadTooSlow(Exception):
    """The import ran past its time and was interrupted."""


@dataclass
class Preloaded:
    """What importing one module in this process did."""

    error: BaseException | None = None
    output: list[str] = field(default_factory=list)  # what it printed, at most _MAX_LINES lines
    threads_started: int = 0  # threads the import left running in this process


def preload(module: str, *, seconds: float = PRELOAD_SECONDS) -> Preloaded:
    """Import ``module`` here, within ``seconds``, with its output captured."""
    result = Preloaded()
    threads_before = _threads()
    with _captured_output() as output, _deadline(seconds):
        try:
            importlib.import_module(module)
        except BaseException as e:  # its own top-level code: anything may come out
            result.error = e
    result.output = output
    result.threads_started = max(0, _threads() - threads_before)
    return result


def _threads() -> int:
    return sum(1 for _ in Path("/proc/self/task").iterdir())


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: FrameType | None) -> None:
        raise PreloadTooSlow(f"took more than {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _captured_output() -> Iterator[list[str]]:
    """Point fds 1 and 2 at a memory file for the duration; the lines written, after."""
    lines: list[str] = []
    capture = os.memfd_create("sigrun-preload-output", os.MFD_CLOEXEC)
    saved = os.dup(1), os.dup(2)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os.dup2(capture, 1)
    os.dup2(capture, 2)
    try:
        yield lines
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        text = os.pread(capture, 1 << 16, 0).decode(errors="replace")
        for fd in (*saved, capture):
            os.close(fd)
        lines += text.splitlines()[:_MAX_LINES]

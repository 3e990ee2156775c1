"""Processes a job left behind: the fork server adopts them, so they are reaped, not zombies.

A job may start a process that leaves its process group (``setsid``, a daemon's double
fork): killing the group when the job's child ends does not reach it, and when its parent
dies the kernel hands it to the nearest "child subreaper" among its ancestors, or else to
PID 1 of its PID namespace.  In a container PID 1 is the runner itself, which waits only for
the processes it started, so every such process would stay a zombie for the pod's life once
it exits, and count against the pod's pid limit.  The fork server therefore declares itself
a subreaper (Linux 3.4+) and, every few seconds, reaps any child it did not start itself.
Adopted processes that still run are left running: one may be a helper of a job still in
progress, and nothing tells whose it is.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Collection
from pathlib import Path

_PR_SET_CHILD_SUBREAPER = 36

#: How often the fork server looks for adopted processes that have exited.
REAP_INTERVAL_SECONDS = 5.0


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children; False where Linux refuses."""
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def children() -> set[int]:
    """This process's children, as the kernel lists them."""
    found: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        found.update(int(pid) for pid in (task / "children").read_text().split())
    return found


def reap(known: Collection[int]) -> list[int]:
    """Reap every child that is not one of ``known`` and has exited; return their pids."""
    reaped = []
    for pid in children().difference(known):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped meanwhile
            continue
        if done:
            reaped.append(pid)
    return reaped

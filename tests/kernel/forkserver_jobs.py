"""Jobs for the fork server tests (allowed prefix ``tests.kernel.``)."""

from __future__ import annotations

import asyncio
import os
import sys
import time

#: Which process imported this module: the fork server (preloaded) or a child.
IMPORTED_BY = os.getpid()


def whoami() -> dict[str, int]:
    return {"pid": os.getpid(), "ppid": os.getppid(), "imported_by": IMPORTED_BY}


def loaded(module: str) -> bool:
    """Whether this child has ``module`` imported."""
    return module in sys.modules


def length(text: str) -> int:
    return len(text)


async def asleep_then(value: int) -> int:
    await asyncio.sleep(0)
    return value


def leave_orphan(path: str, seconds: float) -> None:
    """Start a process outside this job's process group, orphaned at once, living ``seconds``."""
    middle = os.fork()
    if middle == 0:
        os.setsid()  # out of the job's group: killing the group at the job's end misses it
        orphan = os.fork()
        if orphan == 0:
            time.sleep(seconds)
            os._exit(0)
        with open(path, "w") as out:
            out.write(str(orphan))
        os._exit(0)
    os.waitpid(middle, 0)

"""Jobs for the fork server tests (allowed prefix ``tests.kernel.``)."""

from __future__ import annotations

import asyncio
import os

#: Which process imported this module: the fork server (preloaded) or a child.
IMPORTED_BY = os.getpid()


def whoami() -> dict[str, int]:
    return {"pid": os.getpid(), "ppid": os.getppid(), "imported_by": IMPORTED_BY}


def length(text: str) -> int:
    return len(text)


async def asleep_then(value: int) -> int:
    await asyncio.sleep(0)
    return value

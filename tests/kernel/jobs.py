"""Jobs the kernel tests run in real forked children (allowed prefix ``tests.kernel.jobs``).

Each one ends in one of the ways DESIGN.md's table knows.  Crashing jobs turn core
dumps off first so no core file lands in the working tree.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import resource
import signal
import subprocess
import sys
import time
from os import getcwd  # noqa: F401 -- imported on purpose: resolve() must refuse it
from pathlib import Path

from sigrun.runner.cgroup import MemoryCgroup

NOT_CALLABLE = 42


def noop() -> None:
    return None


def add(a: int, b: int) -> int:
    return a + b


async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


def runs_its_own_loop(a: int, b: int) -> int:
    """A plain function that uses asyncio itself (must work although the parent's loop ran)."""
    return asyncio.run(async_add(a, b))


def unserialisable() -> set[int]:
    return {1, 2, 3}


def big_result(size: int) -> str:
    return "x" * size


def boom(message: str) -> None:
    raise ValueError(message)


def type_error_inside(x: int) -> int:
    """Arguments fit; the TypeError is the job's own bug, not bad arguments."""
    return x + "1"  # type: ignore[operator]


def exit_with(code: int) -> None:
    os._exit(code)


def sys_exit(code: int) -> None:
    sys.exit(code)


def kill_self(name: str = "SIGKILL") -> None:
    os.kill(os.getpid(), signal.Signals[name])
    time.sleep(10)


def say_then_die(*lines: str) -> None:
    """Print, then SIGKILL ourselves: the lines must survive as last words."""
    for line in lines:
        print(line)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)


def shout(count: int) -> int:
    """Far more output than a pipe holds: the parent must keep reading."""
    for i in range(count):
        print(f"line {i}", file=sys.stderr if i % 2 else sys.stdout)
    return count


def segfault() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    ctypes.string_at(0)


def abort() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.abort()


def sleep(seconds: float, marker: str = "") -> str:
    """Sleep; first print a line (and write our pid to ``marker``) so a test knows we started."""
    print("sleeping", flush=True)
    if marker:
        Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return "slept"


def spawn_grandchild(pidfile: str) -> int:
    """Start ``sleep 600`` and return at once, leaving it behind."""
    process = subprocess.Popen(["sleep", "600"])
    Path(pidfile).write_text(str(process.pid))
    return process.pid


def read_oom_score_adj() -> int:
    return int(Path("/proc/self/oom_score_adj").read_text())


def escape_and_spam(pidfile: str) -> int:
    """Leave behind ``yes`` in a session of its own (out of reach of the group kill),
    writing to our stdout forever."""
    process = subprocess.Popen(["yes"], start_new_session=True)
    Path(pidfile).write_text(str(process.pid))
    return process.pid


def allocate(mib: int) -> int:
    """Allocate and touch ``mib`` MiB, one MiB at a time, saying how far it got."""
    chunks = []
    for i in range(1, mib + 1):
        chunk = bytearray(1 << 20)
        for offset in range(0, len(chunk), 4096):
            chunk[offset] = 1  # touch every page: make it resident
        chunks.append(chunk)
        if i % 16 == 0:
            print(f"allocated {i} MiB", flush=True)
    return len(chunks)


class Tasks:
    """Jobs may be reached through a dotted attribute path."""

    @staticmethod
    def double(x: int) -> int:
        return 2 * x


def my_memory_cgroup() -> str | None:
    cgroup = MemoryCgroup.of_process()
    return str(cgroup.path) if cgroup else None

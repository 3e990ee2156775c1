"""Job functions the runner tests enqueue (allowed prefix: ``tests.redis.jobs``)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def add(a: int, b: int) -> int:
    return a + b


def boom(message: str) -> None:
    raise ValueError(message)


def sleep(seconds: float, marker: str = "") -> str:
    """Sleep; write our pid to ``marker`` first so a test knows the job has started."""
    if marker:
        Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return "slept"


def kill_self(name: str = "SIGKILL") -> None:
    print("about to die", flush=True)
    os.kill(os.getpid(), signal.Signals[name])
    time.sleep(10)


def fail_until(counter: str, succeed_on: int) -> int:
    """Fail until this is attempt number ``succeed_on`` (counted in a file)."""
    path = Path(counter)
    attempt = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempt))
    if attempt < succeed_on:
        raise RuntimeError(f"attempt {attempt} fails on purpose")
    return attempt


def exit_with(code: int) -> None:
    os._exit(code)


def die_first(counter: str, name: str = "SIGKILL") -> int:
    """Killed by a signal on its first attempt only; succeeds after that."""
    path = Path(counter)
    attempt = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempt))
    if attempt == 1:
        os.kill(os.getpid(), signal.Signals[name])
    return attempt


def sleep_first(counter: str, seconds: float, marker: str) -> int:
    """A long first attempt (pid written to ``marker``), a quick second one."""
    path = Path(counter)
    attempt = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempt))
    if attempt == 1:
        Path(marker).write_text(str(os.getpid()))
        time.sleep(seconds)
    return attempt

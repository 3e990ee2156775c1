"""Fixtures for the kernel tests: memory cgroups made for one test and removed after it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from sigrun.runner.cgroup import MemoryCgroup


@pytest.fixture
def make_cgroup() -> Iterator[Callable[[int], MemoryCgroup]]:
    """Create child cgroups of our own memory cgroup with a limit; remove them afterwards."""
    made: list[MemoryCgroup] = []

    def make(limit_bytes: int) -> MemoryCgroup:
        name = f"sigrun-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        cgroup = MemoryCgroup.create(name, limit_bytes)
        made.append(cgroup)
        return cgroup

    yield make
    for cgroup in reversed(made):
        cgroup.remove()

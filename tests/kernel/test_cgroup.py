"""Memory cgroups on this machine's real kernel (needs root)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from sigrun.runner.cgroup import CgroupUnavailable, MemoryCgroup

pytestmark = pytest.mark.kernel

MiB = 1 << 20


def test_own_memory_cgroup_is_found_with_a_readable_oom_counter() -> None:
    own = MemoryCgroup.of_process()
    assert own is not None
    assert own.path.is_dir()
    assert os.getpid() in own.pids()
    assert isinstance(own.oom_kills(), int)
    assert MemoryCgroup.of_process(os.getpid()) == own


def test_created_cgroup_has_the_limit_and_swap_cannot_dodge_it(
    make_cgroup: Callable[[int], MemoryCgroup],
) -> None:
    cgroup = make_cgroup(64 * MiB)
    own = MemoryCgroup.of_process()
    assert own is not None and cgroup.path.parent == own.path
    assert cgroup.limit_bytes() == 64 * MiB
    assert cgroup.oom_kills() == 0
    if cgroup.version == 1 and (cgroup.path / "memory.memsw.limit_in_bytes").exists():
        assert int((cgroup.path / "memory.memsw.limit_in_bytes").read_text()) == 64 * MiB
    if cgroup.version == 2 and (cgroup.path / "memory.swap.max").exists():
        assert (cgroup.path / "memory.swap.max").read_text().strip() == "0"
    assert MemoryCgroup.at(cgroup.path) == cgroup


def test_creating_an_existing_cgroup_again_resets_its_limit(
    make_cgroup: Callable[[int], MemoryCgroup],
) -> None:
    cgroup = make_cgroup(64 * MiB)
    again = MemoryCgroup.create(cgroup.path.name, 32 * MiB)
    assert again == cgroup
    assert cgroup.limit_bytes() == 32 * MiB
    MemoryCgroup.create(cgroup.path.name, 128 * MiB)
    assert cgroup.limit_bytes() == 128 * MiB


def test_process_added_is_a_member_and_remove_moves_it_back_out(
    make_cgroup: Callable[[int], MemoryCgroup],
) -> None:
    cgroup = make_cgroup(64 * MiB)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        cgroup.add(sleeper.pid)
        assert cgroup.pids() == [sleeper.pid]
        assert MemoryCgroup.of_process(sleeper.pid) == cgroup
        cgroup.remove()
        assert not cgroup.path.exists()
        assert MemoryCgroup.of_process(sleeper.pid) == MemoryCgroup.of_process()
    finally:
        sleeper.kill()
        sleeper.wait()
    cgroup.remove()  # already gone: tolerated


def test_at_refuses_a_directory_that_is_not_a_memory_cgroup(tmp_path: Path) -> None:
    with pytest.raises(CgroupUnavailable, match="is not a memory cgroup"):
        MemoryCgroup.at(tmp_path)


def test_create_under_a_missing_parent_says_why() -> None:
    own = MemoryCgroup.of_process()
    assert own is not None
    ghost = MemoryCgroup(own.path / "sigrun-no-such-parent", own.version)
    with pytest.raises(CgroupUnavailable) as raised:
        MemoryCgroup.create("child", 64 * MiB, parent=ghost)
    assert str(raised.value) == (
        f"cannot create {ghost.path}/child: no such file (is the memory controller enabled here?)"
    )


def test_create_without_privilege_raises_cgroup_unavailable() -> None:
    """A real unprivileged process (uid nobody) is refused, with a one-line reason."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read)
            os.setgid(65534)
            os.setuid(65534)
            try:
                MemoryCgroup.create(f"sigrun-test-unprivileged-{os.getpid()}", 64 * MiB)
                os.write(write, b"created")
            except CgroupUnavailable as e:
                os.write(write, str(e).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        said = f.read().decode()
    os.waitpid(pid, 0)
    assert said.startswith("cannot create ")
    assert said.endswith("permission denied (needs root or a delegated cgroup)")


def test_remove_moves_a_running_process_to_the_parent_first(
    make_cgroup: Callable[[int], MemoryCgroup],
) -> None:
    cgroup = make_cgroup(64 * MiB)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        cgroup.add(sleeper.pid)
        cgroup.remove()
        assert not cgroup.path.exists()
        assert sleeper.poll() is None  # moved, not killed
    finally:
        os.kill(sleeper.pid, signal.SIGKILL)
        sleeper.wait()

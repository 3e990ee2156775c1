"""Finding a process's memory cgroup from /proc/<pid>/cgroup and the mount table (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sigrun.runner.cgroup import MemoryCgroup, _locate

HYBRID_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

DOCKER_V1_MOUNTS = """\
700 690 0:32 /docker/abc /sys/fs/cgroup/memory ro,nosuid shared:9 - cgroup cgroup rw,memory
"""


@pytest.mark.parametrize(
    ("membership", "mounts", "expected"),
    [
        (
            "4:memory:/process_api/c418\n1:cpu:/\n0::/\n",
            HYBRID_MOUNTS,
            MemoryCgroup(Path("/sys/fs/cgroup/memory/process_api/c418"), 1),
        ),
        (
            "9:cpuacct,memory:/kubepods/pod1/ctr\n",
            HYBRID_MOUNTS,
            MemoryCgroup(Path("/sys/fs/cgroup/memory/kubepods/pod1/ctr"), 1),
        ),
        (
            "5:memory:/docker/abc\n",
            DOCKER_V1_MOUNTS,
            MemoryCgroup(Path("/sys/fs/cgroup/memory"), 1),
        ),
        ("1:cpu:/\n", HYBRID_MOUNTS, None),
        ("4:memory:/x\n", "41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", None),
    ],
    ids=["hybrid-v1", "v1-combined-controllers", "v1-container-root", "no-memory", "no-mount"],
)
def test_memory_cgroup_is_located_from_proc_files(
    membership: str, mounts: str, expected: MemoryCgroup | None
) -> None:
    assert _locate(membership, mounts) == expected


def test_v2_is_used_when_its_root_offers_the_memory_controller(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    mounts = f"30 23 0:27 / {tmp_path} rw,nosuid - cgroup2 cgroup2 rw\n"
    assert _locate("0::/kubepods.slice/pod1\n", mounts) == MemoryCgroup(
        tmp_path / "kubepods.slice/pod1", 2
    )


def test_v2_without_the_memory_controller_is_no_memory_cgroup(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("hugetlb\n")
    mounts = f"30 23 0:27 / {tmp_path} rw,nosuid - cgroup2 cgroup2 rw\n"
    assert _locate("0::/\n", mounts) is None

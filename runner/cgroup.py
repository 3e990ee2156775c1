"""The memory cgroup of a process: find it, read its OOM-kill counter and limit, make children.

This module owns every file access under ``/sys/fs/cgroup`` and nothing else: no
policy, no processes of its own.  It speaks both hierarchies:

* cgroup v2 (unified): ``memory.events`` (``oom_kill N``), ``memory.max``,
  ``memory.swap.max``, ``memory.peak``.  Found from the ``0::/path`` line of
  ``/proc/<pid>/cgroup`` and the ``cgroup2`` mount in ``/proc/self/mountinfo``.
* cgroup v1: ``memory.oom_control`` (``oom_kill N``, Linux >= 4.13),
  ``memory.limit_in_bytes``, ``memory.memsw.limit_in_bytes``,
  ``memory.max_usage_in_bytes``.  Found from the ``N:memory:/path`` line and the
  ``cgroup`` mount whose super options name ``memory``.

On a hybrid host the hierarchy that actually has the memory controller wins.

Counting differs between the two, and the supervisor relies on it: on v2 the
``oom_kill`` count of a cgroup includes kills in its descendants; on v1 it
counts only kills of processes that are members of that very cgroup.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sigrun.runner.errors import SigrunError

__all__ = ["CgroupUnavailable", "MemoryCgroup"]

# v1 reports "no limit" as the largest page-aligned signed 64-bit number; anything
# at or above 2**62 is treated as unlimited (no machine has 4 EiB of memory).
_UNLIMITED_V1 = 1 << 62


class CgroupUnavailable(SigrunError):
    """A memory cgroup cannot be created or used here (not root, read-only, no controller)."""


@dataclass(frozen=True)
class MemoryCgroup:
    """One memory cgroup directory, v1 or v2.

    Reading methods return None instead of raising when the file is missing or
    unreadable: a counter we cannot read is "unknown", never an error.
    """

    path: Path
    version: Literal[1, 2]

    # --- finding -------------------------------------------------------------------

    @classmethod
    def of_process(cls, pid: int | str = "self") -> MemoryCgroup | None:
        """The memory cgroup ``pid`` is in, or None when no memory controller is found."""
        try:
            membership = Path(f"/proc/{pid}/cgroup").read_text()
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
        return _locate(membership, mountinfo)

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> MemoryCgroup:
        """The memory cgroup at a directory path, its version told by the files in it.

        Raises :class:`CgroupUnavailable` when ``path`` is not a memory cgroup.
        """
        directory = Path(path)
        if (directory / "memory.limit_in_bytes").exists():
            return cls(directory, 1)
        if (directory / "memory.max").exists() or (directory / "memory.events").exists():
            return cls(directory, 2)
        raise CgroupUnavailable(f"{directory} is not a memory cgroup (no memory.* files)")

    # --- reading -------------------------------------------------------------------

    def oom_kills(self) -> int | None:
        """How many processes the OOM killer has killed in this cgroup (v2: and below it)."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        text = self._read(name)
        if text is None:
            return None
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return None  # v1 before Linux 4.13 has no counter

    def limit_bytes(self) -> int | None:
        """The memory limit in force here, including ancestors' limits; None = unlimited.

        v1 states the effective limit as ``hierarchical_memory_limit`` in
        ``memory.stat``; on v2 the smallest ``memory.max`` up to the mount root wins.
        """
        if self.version == 1:
            stat = self._read("memory.stat")
            for line in (stat or "").splitlines():
                key, _, value = line.partition(" ")
                if key == "hierarchical_memory_limit":
                    return _v1_limit(value)
            return _v1_limit(self._read("memory.limit_in_bytes"))
        limits: list[int] = []
        directory = self.path
        while True:
            text = _read_file(directory / "memory.max")
            if text is None:
                break  # the root (or a directory without the controller)
            if text.strip() != "max":
                limits.append(int(text))
            if directory.parent == directory:
                break
            directory = directory.parent
        return min(limits) if limits else None

    def peak_bytes(self) -> int | None:
        """The cgroup's high-water mark of memory use (v2 ``memory.peak`` needs Linux >= 5.19)."""
        text = self._read("memory.peak" if self.version == 2 else "memory.max_usage_in_bytes")
        return int(text) if text is not None else None

    def pids(self) -> list[int]:
        """The processes in this cgroup right now."""
        text = self._read("cgroup.procs")
        return [int(line) for line in (text or "").split()]

    # --- changing ------------------------------------------------------------------

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into this cgroup."""
        _write(self.path / "cgroup.procs", str(pid))

    @classmethod
    def create(
        cls, name: str, limit_bytes: int, parent: MemoryCgroup | None = None
    ) -> MemoryCgroup:
        """Make (or reuse) child cgroup ``name`` of ``parent`` with a hard memory limit.

        ``parent`` defaults to this process's own memory cgroup.  Swap is capped too
        where the kernel allows, so a job cannot dodge the limit by swapping.
        Raises :class:`CgroupUnavailable` with a one-line reason when it cannot.
        """
        if "/" in name or name in ("", ".", ".."):
            raise CgroupUnavailable(f"invalid cgroup name {name!r}")
        if parent is None:
            parent = cls.of_process("self")
            if parent is None:
                raise CgroupUnavailable(
                    "no memory cgroup controller found for this process in /proc/self/cgroup"
                )
        child = cls(parent.path / name, parent.version)
        try:
            child.path.mkdir(exist_ok=True)
        except OSError as e:
            raise CgroupUnavailable(_why(e, f"cannot create {child.path}")) from e
        try:
            if child.version == 2:
                child._prepare_v2(parent, limit_bytes)
            else:
                child._prepare_v1(limit_bytes)
        except OSError as e:
            child._rmdir_quietly()
            raise CgroupUnavailable(_why(e, f"cannot set the memory limit of {child.path}")) from e
        except CgroupUnavailable:
            child._rmdir_quietly()
            raise
        return child

    def remove(self, timeout: float = 5.0) -> None:
        """Move any processes left here to the parent, then delete the cgroup.

        Tolerates a cgroup that is already gone.  The kernel refuses to remove a
        cgroup while a dying process is still being torn down, so this retries for
        up to ``timeout`` seconds before giving up with :class:`CgroupUnavailable`.
        """
        parent = MemoryCgroup(self.path.parent, self.version)
        deadline = time.monotonic() + timeout
        while True:
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError, FileNotFoundError):
                    parent.add(pid)  # may have exited meanwhile
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise CgroupUnavailable(_why(e, f"cannot remove {self.path}")) from e
            time.sleep(0.01)

    # --- internals -----------------------------------------------------------------

    def _prepare_v1(self, limit_bytes: int) -> None:
        memory = self.path / "memory.limit_in_bytes"
        memsw = self.path / "memory.memsw.limit_in_bytes"
        value = str(limit_bytes)
        if not memsw.exists():  # swap accounting is off: memory alone is the limit
            _write(memory, value)
            return
        # memsw must never be below memory: when lowering a reused cgroup's limit set
        # memory first, when raising set memsw first.
        try:
            _write(memory, value)
            _write(memsw, value)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            _write(memsw, value)
            _write(memory, value)

    def _prepare_v2(self, parent: MemoryCgroup, limit_bytes: int) -> None:
        if not (self.path / "memory.max").exists():
            # The controller must be enabled in the parent for its children.  v2's
            # "no internal processes" rule refuses that while the parent (not the
            # root) has processes of its own, which is the usual case for a runner.
            try:
                _write(parent.path / "cgroup.subtree_control", "+memory")
            except OSError as e:
                raise CgroupUnavailable(
                    _why(e, f"cannot enable the memory controller below {parent.path}")
                    + " (cgroup v2 allows it only in a cgroup without processes of its own)"
                ) from e
        _write(self.path / "memory.max", str(limit_bytes))
        swap = self.path / "memory.swap.max"
        if swap.exists():
            _write(swap, "0")

    def _read(self, name: str) -> str | None:
        return _read_file(self.path / name)

    def _rmdir_quietly(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


def _locate(membership: str, mountinfo: str) -> MemoryCgroup | None:
    """Pure: the memory cgroup named by a /proc/<pid>/cgroup text, given the mount table."""
    v1_path: str | None = None
    v2_path: str | None = None
    for line in membership.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    v1_mount: tuple[str, str] | None = None
    v2_mount: tuple[str, str] | None = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if dash < 5 or len(fields) < dash + 4:
            continue
        root, mount_point = _unescape(fields[3]), _unescape(fields[4])
        fstype, super_options = fields[dash + 1], fields[dash + 3]
        if fstype == "cgroup" and "memory" in super_options.split(","):
            v1_mount = (root, mount_point)
        elif fstype == "cgroup2":
            v2_mount = (root, mount_point)
    if v1_path is not None and v1_mount is not None:
        return MemoryCgroup(_join(v1_mount, v1_path), 1)
    if v2_path is not None and v2_mount is not None:
        controllers = _read_file(Path(v2_mount[1]) / "cgroup.controllers") or ""
        if "memory" in controllers.split():
            return MemoryCgroup(_join(v2_mount, v2_path), 2)
    return None


def _join(mount: tuple[str, str], cgroup_path: str) -> Path:
    """Where ``cgroup_path`` lives under a mount of the hierarchy rooted at ``mount[0]``.

    Without a cgroup namespace a container sees ``/docker/<id>`` both in
    /proc/self/cgroup and as the mount's root; with one, both are ``/``.
    """
    root, mount_point = mount
    if root != "/" and (cgroup_path == root or cgroup_path.startswith(root + "/")):
        cgroup_path = cgroup_path[len(root) :]
    return Path(mount_point) / cgroup_path.lstrip("/")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape")


def _v1_limit(text: str | None) -> int | None:
    if text is None:
        return None
    value = int(text)
    return None if value >= _UNLIMITED_V1 else value


def _read_file(path: Path) -> str | None:
    # Plain os calls: the supervisor reads a counter around every job, so skip io's layers.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks).decode("ascii", "replace")


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode("ascii"))
    finally:
        os.close(fd)


def _why(error: OSError, what: str) -> str:
    reason = {
        errno.EACCES: "permission denied (needs root or a delegated cgroup)",
        errno.EPERM: "operation not permitted (needs root or a delegated cgroup)",
        errno.EROFS: "the cgroup filesystem is mounted read-only",
        errno.ENOENT: "no such file (is the memory controller enabled here?)",
        errno.EBUSY: "busy (processes are still in it)",
    }.get(error.errno or 0, error.strerror or str(error))
    return f"{what}: {reason}"

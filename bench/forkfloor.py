"""What a fork costs by itself: fork, ``_exit(0)``, ``waitpid``, from a process of a given size.

The floor under every fork-per-job design, whatever runs around it: the page
tables the kernel copies, and the copy-on-write faults the parent's and the
child's first writes to each shared page take.  It grows with the parent's
memory, so it is measured from a bare interpreter, from one that has imported
what sigrun's fork server imports, and from one that has imported what the
runner imports (the process sigrun does not fork from).

With ``TOUCH`` > 0 each child also writes one byte to each of that many pages of
a buffer the parent allocated before forking: the extra CPU over the extra
faults is what one copy-on-write fault costs on this machine.

Run as ``python -P -m bench.forkfloor FORKS TOUCH [MODULE...]``; prints one JSON
object.  :func:`measure` runs that in a fresh interpreter per case, so that
each one's memory is its imports' and nothing else.  This module itself imports
next to nothing at the top (no argparse, no subprocess: subprocess brings
threading, whose fork hooks would run in every child and be counted).
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import sys
from typing import Any

FORK_SERVER = ("sigrun.runner.forkserver",)
#: (key, label, pages each child writes, modules imported first); the runner's
#: modules are what ``sigrun work`` loads.
CASES: tuple[tuple[str, str, int, tuple[str, ...]], ...] = (
    ("bare", "a bare interpreter", 0, ()),
    ("fork-server", "the fork server's imports", 0, FORK_SERVER),
    (
        "fork-server-touch",
        "the fork server's imports; each child writes 256 pages",
        256,
        FORK_SERVER,
    ),
    (
        "runner",
        "the runner's imports (redis-py, asyncio)",
        0,
        ("sigrun.runner.cli", "sigrun.runner.worker"),
    ),
)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:  # no pathlib: it adds imports
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


PAGE = os.sysconf("SC_PAGE_SIZE")


def _fork_and_reap(forks: int, touch: int) -> dict[str, float]:
    shared = bytearray(max(1, touch) * PAGE)  # faulted in here, so children share it
    shared[::PAGE] = b"\1" * len(shared[::PAGE])
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(forks):
        pid = os.fork()
        if pid == 0:
            for offset in range(0, touch * PAGE, PAGE):
                shared[offset] = 2
            os._exit(0)
        os.waitpid(pid, 0)
    self_after = resource.getrusage(resource.RUSAGE_SELF)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)

    def cpu(after: resource.struct_rusage, before: resource.struct_rusage) -> float:
        return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime

    return {
        "parent_ms": cpu(self_after, self_before) * 1e3 / forks,
        "child_ms": cpu(children_after, children_before) * 1e3 / forks,
        "parent_faults": (self_after.ru_minflt - self_before.ru_minflt) / forks,
        "child_faults": (children_after.ru_minflt - children_before.ru_minflt) / forks,
    }


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not (argv[0].isdigit() and argv[1].isdigit()):
        print("usage: python -P -m bench.forkfloor FORKS TOUCH [MODULE...]", file=sys.stderr)
        return 2
    forks, touch, modules = int(argv[0]), int(argv[1]), argv[2:]
    for module in modules:
        importlib.import_module(module)
    _fork_and_reap(max(1, forks // 10), touch)  # warm-up: the loop's own pages, first faults
    found: dict[str, Any] = _fork_and_reap(forks, touch)
    found.update(rss_kib=_status_kib("VmRSS"), anon_kib=_status_kib("RssAnon"))
    print(json.dumps(found))
    return 0


def measure(forks: int, repeats: int) -> list[dict[str, Any]]:
    """Each case ``repeats`` times, alternating, each in a fresh interpreter."""
    import subprocess  # noqa: PLC0415  # not at the top: see the docstring

    runs: dict[str, list[dict[str, Any]]] = {key: [] for key, *_ in CASES}
    for _ in range(repeats):
        for key, _label, touch, modules in CASES:
            command = [sys.executable, "-P", "-m", "bench.forkfloor", str(forks), str(touch)]
            done = subprocess.run(
                [*command, *modules], capture_output=True, text=True, check=True, timeout=300
            )
            runs[key].append(json.loads(done.stdout))
    return [
        {"key": key, "label": label, "touch": touch, "modules": list(modules), "runs": runs[key]}
        for key, label, touch, modules in CASES
    ]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

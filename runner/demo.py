"""``sigrun demo``: the seed story, replayed with real processes and a real OOM killer.

A team imports time-series data in one-hour windows with several workers at
once; each window's memory grows with its size.  Half the jobs die with
"SIGKILL (signal 9)" and no log line.  Here a real runner, inside a real memory
cgroup, runs that import: the kernel OOM-kills some windows and sigrun says so
(DirtyExit, OOMKilled, limit, peak).  Then the same hours in 15-minute windows
all succeed.

The job function :func:`import_window` lives in this module, so the demo's
runner allows exactly ``sigrun.runner.demo`` and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sigrun.runner import client
from sigrun.runner.cgroup import CgroupUnavailable, MemoryCgroup
from sigrun.runner.errors import SigrunError
from sigrun.runner.exits import format_bytes
from sigrun.runner.jobs import Record
from sigrun.runner.redisio import SyncRedis, connect, redact
from sigrun.runner.redisserver import RedisServer

QUEUE = "demo-imports"
MEMORY_LIMIT = 256 * 1024 * 1024
CONCURRENCY = 4
MIB_PER_MINUTE = 4 / 3  # a one-hour window needs 80 MiB, a 15-minute one 20 MiB


def import_window(start_minute: int, minutes: int) -> dict[str, int]:
    """Load one window of the time series: memory grows with the window's length."""
    label = window_label(start_minute, minutes)
    print(f"loading window {label}", flush=True)
    chunks = []
    for _ in range(round(minutes * MIB_PER_MINUTE)):
        chunk = bytearray(1024 * 1024)
        for offset in range(0, len(chunk), 4096):  # touch every page: this memory is real
            chunk[offset] = 1
        chunks.append(chunk)
        time.sleep(0.02)
    print(f"loaded window {label}: {len(chunks)} MiB", flush=True)
    return {"minutes": minutes, "mib": len(chunks)}


def window_label(start_minute: int, minutes: int) -> str:
    end = start_minute + minutes
    return f"{start_minute // 60:02d}:{start_minute % 60:02d}-{end // 60:02d}:{end % 60:02d}"


@dataclass(frozen=True)
class WindowResult:
    label: str
    state: str
    record: Record | None


def run_demo(redis_url: str | None = None, hours: int = 12) -> int:
    print("sigrun demo: the seed story (an import in time windows, 4 jobs at once)\n")
    with contextlib.ExitStack() as stack:
        own_redis = redis_url is None
        if redis_url is None:
            server = stack.enter_context(RedisServer())
            redis_url = server.url
            print(f"  redis-server on 127.0.0.1:{server.port}, started for this demo")
        else:
            print(f"  Redis at {redis_url}")
        redis = connect(redis_url)
        cgroup = stack.enter_context(_demo_cgroup())
        log_dir = Path(tempfile.mkdtemp(prefix="sigrun-demo-"))  # kept: the runners' own view
        print(f"  runner logs in {log_dir}\n")

        one_hour = _run_import(
            redis, redis_url, cgroup, hours=hours, minutes=60, log=log_dir / "run1.log"
        )
        _print_results(f"Run 1: {hours} one-hour windows", one_hour)
        died = [w for w in one_hour if w.state != "succeeded"]
        if died and died[0].record and died[0].record.last_words:
            print(
                f'  last words of {died[0].label}: "{died[0].record.last_words[-1]}" '
                "(its own 'loaded' line never came)\n"
            )

        quarter = _run_import(
            redis, redis_url, cgroup, hours=hours, minutes=15, log=log_dir / "run2.log"
        )
        _print_results(f"Run 2: the same {hours} hours in 15-minute windows", quarter, brief=True)

        info = client.info(redis)
        print(f"Totals: processed {info.processed}, failed {info.failed}, dirty {info.dirty}.")
        if own_redis:
            print("This demo's Redis stops now. To look around afterwards, run it on yours:")
            print("  sigrun demo --redis URL; sigrun failed --redis URL --cause OOMKilled")
        else:
            print(f"Look closer: sigrun failed --redis {redact(redis_url)} --cause OOMKilled")
    return 0


@contextlib.contextmanager
def _demo_cgroup() -> Iterator[MemoryCgroup | None]:
    try:
        cgroup = MemoryCgroup.create(f"sigrun-demo-{os.getpid()}", MEMORY_LIMIT)
    except CgroupUnavailable as e:
        print(f"  no memory cgroup ({e}): nothing will be OOM-killed; the rest runs as usual")
        yield None
        return
    print(
        f"  memory cgroup {cgroup.path} (v{cgroup.version}), limit {format_bytes(MEMORY_LIMIT)}: "
        "the runner and its children run inside it, like a container, and the "
        "windows running at once share it"
    )
    try:
        yield cgroup
    finally:
        cgroup.remove()


def _run_import(
    redis: SyncRedis, url: str, cgroup: MemoryCgroup | None, *, hours: int, minutes: int, log: Path
) -> list[WindowResult]:
    ids = {}
    for start in range(0, hours * 60, minutes):
        job_id = client.enqueue(
            redis, QUEUE, "sigrun.runner.demo:import_window", start, minutes, max_attempts=1
        )
        ids[job_id] = window_label(start, minutes)
    command = [
        sys.executable,
        "-P",  # never the current directory on sys.path: a folder there could shadow a module
        "-m",
        "sigrun.runner.cli",
        "work",
        "--redis",
        url,
        "--queue",
        QUEUE,
        "--concurrency",
        str(CONCURRENCY),
        "--burst",
        "--allow-module",
        "sigrun.runner.demo",
    ]
    with open(log, "w") as out:
        # The runner joins the cgroup before it starts: it and every child share one limit.
        runner = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=(lambda: cgroup.add(os.getpid())) if cgroup else None,  # noqa: PLW1509
        )
        if runner.wait(timeout=600) != 0:
            raise SigrunError(f"the demo runner failed (exit {runner.returncode}); see {log}")
    results = []
    for job_id, label in ids.items():
        state = client.job_state(redis, QUEUE, job_id)
        raw = state.get("record")
        results.append(
            WindowResult(label, state.get("state", "?"), Record.from_json(raw) if raw else None)
        )
    return results


def _print_results(title: str, results: list[WindowResult], *, brief: bool = False) -> None:
    ok = sum(1 for r in results if r.state == "succeeded")
    print(f"{title}, concurrency {CONCURRENCY}, limit {format_bytes(MEMORY_LIMIT)}")
    if not brief or ok != len(results):
        width = max(len(r.label) for r in results)
        print(f"  {'WINDOW':<{width}}  {'STATE':<9}  {'CAUSE':<9}  MESSAGE")
        for r in results:
            cause = r.record.cause.value if r.record and r.record.cause else ""
            message = r.record.message if r.record else ""
            print(f"  {r.label:<{width}}  {r.state:<9}  {cause:<9}  {message}")
    dirty = [
        r for r in results if r.record and r.record.cause and r.record.cause.value == "OOMKilled"
    ]
    print(
        f"  => {ok} of {len(results)} windows succeeded, {len(dirty)} died as DirtyExit OOMKilled\n"
    )

"""The scenarios: throughput, pickup latency, Redis cost per job, runner memory.

Each returns plain data (lists of numbers per system and round) that
:mod:`bench.report` turns into tables; nothing here formats.

Timing is taken inside the jobs, the same way for every system: the queue holds
a ``stamp`` job, the N jobs under test, and another ``stamp`` job; each stamp
appends ``time.time()`` when it starts, and throughput is N over the time
between the two.  Worker start-up and shut-down are therefore not counted, for
anyone.  The CPU time the system's whole process tree (and redis-server) spent
is read from ``/proc`` when each stamp appears, so that the report can say where
a job's cost goes, not only how fast jobs went.  Rounds alternate the systems
(A B C, then B C A, ...) so that a noisy neighbour on the machine hits each about
equally; ratios are taken within a round.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.redisproxy import CountingProxy
from bench.systems import QUEUE, SIGRUN, Ctx, System, wait_for_file
from sigrun.runner.keys import Keys

Log = Callable[[str], None]


def rotated(systems: Sequence[System], round_index: int) -> list[System]:
    shift = round_index % len(systems)
    return [*systems[shift:], *systems[:shift]]


def _stamp_times(path: Path) -> list[float]:
    return [float(line) for line in path.read_text().split()]


def _unique(ctx: Ctx, name: str) -> Path:
    return ctx.work / f"{name}-{time.monotonic_ns()}"


# --- throughput ----------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One throughput measurement: jobs per second, and CPU milliseconds per job."""

    jobs_per_second: float
    cpu_ms: float  # the system's own processes (workers, their children), per job
    redis_cpu_ms: float  # redis-server, per job
    # The same CPU by role (see Usage), with minor page faults: role -> [ms, faults] per job.
    split: dict[str, list[float]]


def throughput_once(
    ctx: Ctx, system: System, *, job: str, n: int, concurrency: int, timeout: float
) -> Run:
    """``n`` jobs of kind ``job``, between two stamp jobs: their rate and their CPU."""
    ctx.flush()
    start, end = _unique(ctx, "start"), _unique(ctx, "end")
    system.enqueue(ctx, [("stamp", [str(start)], 1), (job, [], n), ("stamp", [str(end)], 1)])
    workers = system.start(ctx, concurrency=concurrency, burst=system.burst)
    try:
        # Burst workers may exit as soon as the queue is empty (one of two bare loops
        # before the other has run the end stamp): only the file says it is done.  Not
        # polling the workers also leaves an exited one unreaped, so its CPU can be read.
        wait_for_file(start, timeout=timeout, workers=workers)
        before, redis_before = tree_usage(workers.pids), _usage(ctx.redis_pid)
        wait_for_file(end, timeout=timeout, workers=None if system.burst else workers)
        after, redis_after = tree_usage(workers.pids), _usage(ctx.redis_pid)
        if system.burst:
            workers.wait(timeout)
    finally:
        workers.stop()
    split = {
        role: [
            (after[role].cpu - before.get(role, Usage()).cpu) * 1e3 / n,
            (after[role].faults - before.get(role, Usage()).faults) / n,
        ]
        for role in after
    }
    return Run(
        jobs_per_second=n / (_stamp_times(end)[0] - _stamp_times(start)[0]),
        cpu_ms=sum(cpu for cpu, _ in split.values()),
        redis_cpu_ms=(redis_after.cpu - redis_before.cpu) * 1e3 / n,
        split=split,
    )


_TICKS = os.sysconf("SC_CLK_TCK")
FORK_SERVER_MODULE = "sigrun.runner.forkserver"


@dataclass(frozen=True)
class Usage:
    """CPU seconds and minor page faults, from ``/proc/PID/stat``.

    Minor faults are counted because after a fork they are most of the cost: every
    page either process writes first takes one (copy-on-write).
    """

    cpu: float = 0.0
    faults: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.cpu + other.cpu, self.faults + other.faults)


def _usages(pid: int | None) -> tuple[Usage, Usage]:
    """What ``pid`` used itself, and what its reaped children used (zero if gone or None)."""
    if pid is None:
        return Usage(), Usage()
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return Usage(), Usage()
    fields = [int(f) for f in stat[stat.rindex(")") + 2 :].split()[7:15]]
    minflt, cminflt, _, _, utime, stime, cutime, cstime = fields
    return (
        Usage((utime + stime) / _TICKS, minflt),
        Usage((cutime + cstime) / _TICKS, cminflt),
    )


def _usage(pid: int | None) -> Usage:
    own, reaped = _usages(pid)
    return own + reaped


def _is_fork_server(pid: int) -> bool:
    try:
        return FORK_SERVER_MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def tree_usage(pids: Sequence[int]) -> dict[str, Usage]:
    """What these processes and every descendant alive (or unreaped) now used, by role.

    *workers*: the processes the system started (sigrun's runner, each bare loop,
    RQ's workers, Celery's main process); *fork server*: sigrun's; *children*:
    everything below them, alive or reaped (job children, or Celery's pool).
    """
    roles = {"workers": Usage(), "fork server": Usage(), "children": Usage()}
    for root in pids:
        own, reaped = _usages(root)
        roles["workers"] += own
        roles["children"] += reaped
        for member in process_tree(root)[1:]:
            own, reaped = _usages(member)
            if _is_fork_server(member):
                roles["fork server"] += own
                roles["children"] += reaped
            else:
                roles["children"] += own + reaped
    return roles


def throughput(
    ctx: Ctx,
    systems: Sequence[System],
    *,
    job: str,
    n: int,
    concurrency: int,
    rounds: int,
    log: Log,
) -> tuple[
    dict[str, list[float]], dict[str, list[list[float]]], dict[str, list[dict[str, list[float]]]]
]:
    """Jobs/s per system and round, [own, redis-server] CPU ms per job likewise, and the split."""
    values: dict[str, list[float]] = {s.key: [] for s in systems}
    cpu: dict[str, list[list[float]]] = {s.key: [] for s in systems}
    split: dict[str, list[dict[str, list[float]]]] = {s.key: [] for s in systems}
    timeout = max(300.0, n / 5)
    for r in range(rounds):
        for system in rotated(systems, r):
            run = throughput_once(
                ctx, system, job=job, n=n, concurrency=concurrency, timeout=timeout
            )
            values[system.key].append(run.jobs_per_second)
            cpu[system.key].append([run.cpu_ms, run.redis_cpu_ms])
            split[system.key].append(run.split)
            log(
                f"  round {r + 1}: {system.key:17} {run.jobs_per_second:8.1f} jobs/s,"
                f" CPU {run.cpu_ms:.2f} ms/job (+ redis {run.redis_cpu_ms:.2f})"
            )
    return values, cpu, split


# --- pickup latency ------------------------------------------------------------------


def latency(
    ctx: Ctx, systems: Sequence[System], *, count: int, gap: float, rounds: int, log: Log
) -> dict[str, dict[str, list[float]]]:
    """Seconds from enqueue to the job's start, and to its recorded end, one job at a time."""
    found: dict[str, dict[str, list[float]]] = {s.key: {"start": [], "done": []} for s in systems}
    for r in range(rounds):
        for system in rotated(systems, r):
            ctx.flush()
            workers = system.start(ctx, concurrency=1, burst=False)
            try:
                system.ready(ctx, workers)
                stamps = _unique(ctx, "latency")
                times = system.latency(ctx, count, stamps, gap)
            finally:
                workers.stop()
            starts = _stamp_times(stamps)
            found[system.key]["start"] += [s - e for (e, _), s in zip(times, starts, strict=True)]
            found[system.key]["done"] += [d - e for e, d in times if d is not None]
            median = sorted(found[system.key]["start"])[len(found[system.key]["start"]) // 2]
            log(
                f"  round {r + 1}: {system.key:15} enqueue->start median so far"
                f" {median * 1e3:.2f} ms"
            )
    return found


# --- Redis cost per job -------------------------------------------------------------

_NOT_WORKER = {"info", "config", "memory", "flushall", "client", "hello", "ping", "command"}


def _executed(ctx: Ctx) -> int:
    stats: dict[str, Any] = ctx.redis.info("commandstats")
    return sum(
        int(v["calls"])
        for k, v in stats.items()
        if k.removeprefix("cmdstat_").split("|")[0] not in _NOT_WORKER
    )


def _used_memory(ctx: Ctx) -> int:
    return int(ctx.redis.info("memory")["used_memory"])


def _keys_by_expiry(ctx: Ctx) -> tuple[int, int]:
    """How many keys Redis holds that will expire, and how many that never will."""
    keys = list(ctx.redis.scan_iter(count=1000))
    pipe = ctx.redis.pipeline(transaction=False)
    for key in keys:
        pipe.ttl(key)
    ttls = pipe.execute()
    persistent = sum(1 for ttl in ttls if ttl == -1)
    return len(keys) - persistent, persistent


def cost_once(
    ctx: Ctx, system: System, *, n: int, proxy: CountingProxy, timeout: float
) -> dict[str, float]:
    ctx.flush()
    ctx.redis.script_flush()  # both runs load their scripts: it cancels out
    time.sleep(0.2)
    memory_before = _used_memory(ctx)
    end = _unique(ctx, "end")
    system.enqueue(ctx, [("noop", [], n), ("stamp", [str(end)], 1)])
    executed_before, wire_before = _executed(ctx), proxy.counts
    workers = system.start(ctx, concurrency=1, burst=system.burst, url=proxy.url)
    try:
        if system.burst:
            workers.wait(timeout)
        else:
            wait_for_file(end, timeout=timeout, workers=workers)
            time.sleep(0.2)  # its own bookkeeping of the last job
    finally:
        workers.stop()
    wire = proxy.counts
    executed = _executed(ctx) - executed_before
    time.sleep(0.2)
    expiring, persistent = _keys_by_expiry(ctx)
    return {
        "commands": wire.commands - wire_before.commands,
        "round_trips": wire.round_trips - wire_before.round_trips,
        "executed": executed,
        "memory": _used_memory(ctx) - memory_before,
        "expiring_keys": expiring,
        "persistent_keys": persistent,
    }


def cost(
    ctx: Ctx, systems: Sequence[System], *, small: int, big: int, redis_port: int, log: Log
) -> dict[str, dict[str, float]]:
    """Per job, as the difference between a run of ``big`` and one of ``small`` jobs.

    Fixed costs (start-up, registration, shutdown) cancel out; what scales with
    the run (heartbeats, idle polling) stays in, amortised.
    """
    found: dict[str, dict[str, float]] = {}
    with CountingProxy(redis_port) as proxy:
        for system in systems:
            timeout = max(300.0, big / 5)
            a = cost_once(ctx, system, n=small, proxy=proxy, timeout=timeout)
            b = cost_once(ctx, system, n=big, proxy=proxy, timeout=timeout)
            found[system.key] = {k: (b[k] - a[k]) / (big - small) for k in a}
            per = found[system.key]
            log(
                f"  {system.key:15} {per['round_trips']:.2f} round trips, {per['commands']:.2f} "
                f"commands sent, {per['executed']:.1f} executed,"
                f" {per['memory']:.0f} bytes kept per job; keys per job: {per['expiring_keys']:.2f}"
                f" expiring, {per['persistent_keys']:.2f} never expiring"
            )
    return found


# --- runner memory ------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    found = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found += process_tree(int(child))
    except OSError:
        pass
    return found


def memory_of(pid: int) -> dict[str, Any]:
    """RSS, PSS and USS (private) of one process, in bytes, and what it is."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        fields[name] = int(rest.split()[0]) * 1024
    cmdline = (
        Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    )
    stat = Path(f"/proc/{pid}/stat").read_text()
    return {
        "pid": pid,
        "ppid": int(stat[stat.rindex(")") + 2 :].split()[1]),
        "command": cmdline[:200],
        "rss": fields.get("Rss", 0),
        "pss": fields.get("Pss", 0),
        "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
    }


def tree_memory(pid: int) -> list[dict[str, Any]]:
    found = []
    for member in process_tree(pid):
        with contextlib.suppress(OSError):  # gone meanwhile (a job child)
            found.append(memory_of(member))
    return found


def runner_memory(ctx: Ctx, *, jobs: int, log: Log) -> dict[str, Any]:
    """A sigrun runner's memory idle, then while and after it runs ``jobs`` no-op jobs."""
    ctx.flush()
    stats = Keys().queue(QUEUE).stats
    workers = SIGRUN.start(ctx, concurrency=1, burst=False)
    samples: list[dict[str, Any]] = []
    try:
        SIGRUN.ready(ctx, workers)
        time.sleep(1.0)
        idle = tree_memory(workers.pids[0])
        log(f"  idle: {_summary(idle)}")
        end = _unique(ctx, "end")
        SIGRUN.enqueue(ctx, [("noop", [], jobs), ("stamp", [str(end)], 1)])
        deadline = time.monotonic() + max(600.0, jobs / 5)
        while not end.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the memory run did not finish")
            processed = int(ctx.redis.hget(stats, "processed") or 0)
            samples.append({"processed": processed, "processes": tree_memory(workers.pids[0])})
            time.sleep(0.5)
        time.sleep(1.0)
        after = tree_memory(workers.pids[0])
        log(f"  after {jobs} jobs: {_summary(after)}")
    finally:
        workers.stop()
    return {"jobs": jobs, "idle": idle, "after": after, "samples": samples}


def idle_memory(ctx: Ctx, system: System, *, concurrency: int) -> list[dict[str, Any]]:
    """A peer worker's processes, idle after one job (for comparison)."""
    ctx.flush()
    workers = system.start(ctx, concurrency=concurrency, burst=False)
    try:
        system.ready(ctx, workers)
        time.sleep(1.0)
        return [m for pid in workers.pids for m in tree_memory(pid)]
    finally:
        workers.stop()


def _summary(processes: list[dict[str, Any]]) -> str:
    parts = [f"pid {p['pid']} rss {p['rss'] / 2**20:.1f} MiB" for p in processes]
    return "; ".join(parts) + f"; total pss {sum(p['pss'] for p in processes) / 2**20:.1f} MiB"

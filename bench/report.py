"""Turn the scenarios' numbers into BENCHMARKS.md (tables) and check them against the targets.

Per round, the ratio sigrun / peer is taken from the two values measured in
that same round; tables show the median and the range (min-max) of values and
of those ratios.  Percentiles are linear between the closest ranks.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from bench import breakdown

MiB = 2**20
#: The sigrun variants measured: the default, then the one a user picks for modules that
#: must not be imported before a fork.  Targets are checked for the default only.
SIGRUNS = ("sigrun", "sigrun-no-preload")


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratios(values: dict[str, list[float]], mine: str, theirs: str) -> list[float]:
    return [a / b for a, b in zip(values.get(mine, []), values.get(theirs, []), strict=False) if b]


def _range(s: dict[str, float], fmt: str) -> str:
    if s["min"] == s["max"]:
        return format(s["median"], fmt)
    return f"{format(s['median'], fmt)} ({format(s['min'], fmt)}-{format(s['max'], fmt)})"


def _times(s: dict[str, float]) -> str:
    return f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})"


def throughput_table(scenario: dict[str, Any], labels: dict[str, str]) -> list[str]:
    values: dict[str, list[float]] = scenario["values"]
    cpu: dict[str, list[list[float]]] = scenario.get("cpu_ms", {})
    mine = [k for k in SIGRUNS if k in values]
    head = "| system | jobs/s: median (min-max) |" + "".join(
        f" {labels[m]} ÷ this, per round |" for m in mine
    )
    if cpu:
        head += " CPU ms per job: own processes + redis-server |"
    lines = [head, "|---|---:|" + "---:|" * (len(mine) + bool(cpu))]
    for key, vals in values.items():
        cells = [labels[key], _range(spread(vals), ".0f")]
        for m in mine:
            r = ratios(values, m, key)
            cells.append("—" if key == m or not r else _times(spread(r)))
        if cpu:
            cells.append(_cpu_cell(cpu.get(key, [])))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cpu_cell(rounds: list[list[float]]) -> str:
    """Median over rounds of the system's own CPU and of redis-server's, per job."""
    if not rounds:
        return "—"
    own = statistics.median(r[0] for r in rounds)
    server = statistics.median(r[1] for r in rounds)
    return f"{own:.2f} + {server:.2f}"


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: what was asked, what was measured, met or not (None: not measured)."""
    checks: list[dict[str, Any]] = []
    by_id = {s["id"]: s for s in results.get("throughput", [])}

    def ratio_check(scenario: str, mine: str, theirs: str, want: float, what: str) -> None:
        s = by_id.get(scenario)
        r = ratios(s["values"], mine, theirs) if s else []
        if not r:
            checks.append({"target": what, "system": mine, "measured": "not measured", "met": None})
            return
        sp = spread(r)
        checks.append(
            {
                "target": what,
                "system": mine,
                "measured": f"{sp['median']:.2f}x (rounds {sp['min']:.2f}-{sp['max']:.2f})",
                "met": sp["median"] >= want,
            }
        )

    for mine in SIGRUNS[:1]:
        ratio_check("noop-c1", mine, "rq-fork", 4.0, "no-op, concurrency 1: ≥ 4x RQ forking Worker")
        ratio_check("noop-c1", mine, "bare", 0.9, "no-op, concurrency 1: ≥ 0.9x bare fork loop")
        ratio_check(
            "noop-c2",
            mine,
            "celery",
            1.0,
            "no-op, concurrency 2: ≥ Celery prefork (2 processes, no results)",
        )
        ratio_check(
            "noop-c2",
            mine,
            "celery-results",
            1.0,
            "no-op, concurrency 2: ≥ Celery prefork (2 processes, Redis results)",
        )
    latency = results.get("latency", {}).get("values", {})
    for mine in SIGRUNS[:1]:
        if mine in latency:
            starts = latency[mine]["start"]
            p50, p99 = percentile(starts, 50) * 1e3, percentile(starts, 99) * 1e3
            checks.append(
                {
                    "target": "pickup latency (enqueue→start), idle runner: p50 < 3 ms, p99 < 8 ms",
                    "system": mine,
                    "measured": f"p50 {p50:.2f} ms, p99 {p99:.2f} ms",
                    "met": p50 < 3 and p99 < 8,
                }
            )
    cost = results.get("cost", {}).get("values", {})
    if "sigrun" in cost:
        trips = cost["sigrun"]["round_trips"]
        checks.append(
            {
                "target": "Redis: ≤ 3 round trips per job on the hot path",
                "system": "sigrun",
                "measured": f"{trips:.2f} per job (heartbeats included)",
                "met": trips <= 3,
            }
        )
        per = cost["sigrun"]
        if "persistent_keys" in per:
            checks.append(
                {
                    "target": "finished-job data expires by a configurable TTL (`--job-ttl`)",
                    "system": "sigrun",
                    "measured": f"keys left per finished job: {per['expiring_keys']:.2f} with a"
                    f" TTL, {per['persistent_keys']:.2f} without",
                    "met": per["persistent_keys"] < 0.01 and per["expiring_keys"] > 0,
                }
            )
    memory = results.get("memory")
    if memory:
        idle_rss = sum(p["rss"] for p in memory["idle"]) / MiB
        idle_pss = sum(p["pss"] for p in memory["idle"]) / MiB
        checks.append(
            {
                "target": "idle runner < 40 MB (PSS: a page shared by its processes counts once)",
                "system": "sigrun",
                "measured": f"PSS {idle_pss * MiB / 1e6:.1f} MB ({idle_pss:.1f} MiB); RSS summed"
                f" over its processes, shared pages counted in each, {idle_rss:.1f} MiB",
                "met": idle_pss * MiB < 40e6,
            }
        )
        growth = _growth(memory)
        checks.append(
            {
                "target": f"no growth over {memory['jobs']:,} jobs",
                "system": "sigrun",
                "measured": f"runner {growth['runner'] / MiB:+.2f} MiB, fork server "
                f"{growth['fork server'] / MiB:+.2f} MiB (RSS, after warm-up vs end)",
                "met": abs(growth["runner"]) < 1 * MiB and abs(growth["fork server"]) < 1 * MiB,
            }
        )
    return checks + operator_checks(results)


def operator_targets(ttl: float | None) -> list[tuple[str, str, str, float]]:
    """(scenario, the issue's words, the table's words, limit on the p95 in seconds)."""
    lost = f"p95 < TTL + 5 s = {ttl + 5:g} s" if ttl is not None else "p95 < TTL + 5 s"
    return [
        ("backlog", "operator: backlog to scale-up p95 under 3 s", "p95 < 3 s", 3.0),
        ("oom", "operator: pod OOMKilled status to DirtyExit Event p95 under 3 s", "p95 < 3 s",
         3.0),
        ("heartbeat", "operator: lost heartbeat to requeue under TTL + 5 s (p95)", lost,
         (ttl or 0) + 5),
    ]  # fmt: skip


def operator_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The operator's three reaction targets, judged on the p95 of the run's trials."""
    measured = results.get("operator") or {}
    scenarios = measured.get("scenarios", {})
    ttl = measured.get("heartbeat_ttl")
    checks: list[dict[str, Any]] = []
    for key, target, _, limit in operator_targets(ttl):
        check = {"target": target, "system": "sigrun", "scenario": key}
        s = scenarios.get(key)
        if s is None:
            checks.append({**check, "measured": "not measured", "met": None})
            continue
        note = f"; TTL {ttl:g} s" if key == "heartbeat" else ""
        measured_words = (
            f"p95 {s['p95']:.2f} s (p50 {s['p50']:.2f} s, max {s['max']:.2f} s,"
            f" {len(s['seconds'])} trials{note})"
        )
        checks.append({**check, "measured": measured_words, "met": s["p95"] < limit})
    return checks


def _role(process: dict[str, Any], root: int) -> str:
    if process["pid"] == root:
        return "runner"
    if process.get("ppid") == root:
        return "fork server"
    return "spare child (forked, waiting for a job)"


def _growth(memory: dict[str, Any]) -> dict[str, float]:
    """RSS at the end minus RSS at the first sample past 10% of the jobs (warm-up)."""
    root = memory["idle"][0]["pid"]
    warm = next(
        (s for s in memory["samples"] if s["processed"] >= memory["jobs"] // 10),
        {"processes": memory["idle"]},
    )

    def rss(processes: list[dict[str, Any]], role: str) -> float:
        return float(sum(p["rss"] for p in processes if _role(p, root) == role))

    return {
        role: rss(memory["after"], role) - rss(warm["processes"], role)
        for role in ("runner", "fork server")
    }


def throughput_scenario(results: dict[str, Any], scenario: str) -> dict[str, Any] | None:
    """One throughput scenario's results by its id (``noop-c2``), if this run measured it."""
    return next((s for s in results.get("throughput", []) if s["id"] == scenario), None)


def _median_ratio(results: dict[str, Any], scenario: str, mine: str, theirs: str) -> float | None:
    found = throughput_scenario(results, scenario)
    r = ratios(found["values"], mine, theirs) if found else []
    return statistics.median(r) if r else None


def _why_not_met(results: dict[str, Any]) -> list[str]:
    """For the concurrency-2 target against Celery, when missed: the arithmetic of why."""
    missed = [c for c in results["targets"] if c["met"] is False and "concurrency 2" in c["target"]]
    found = throughput_scenario(results, "noop-c2")
    cpu = (found or {}).get("cpu_ms", {})
    if not missed or not found or not cpu.get("sigrun") or not found["values"].get("celery"):
        return []

    def total(key: str) -> float:  # as _cpu_bound counts it, so the two agree
        own = statistics.median(r[0] for r in cpu[key])
        return float(round(own, 2) + round(statistics.median(r[1] for r in cpu[key]), 2))

    celery = statistics.median(found["values"]["celery"])
    mine = total("sigrun")
    bare_rate = (
        f" Even the bare fork loop, which does nothing else, reaches"
        f" {statistics.median(found['values']['bare']):,.0f} jobs/s."
        if found["values"].get("bare")
        else ""
    )
    floor = f", the bare fork loop {total('bare'):.2f} ms" if cpu.get("bare") else ""
    theirs = f", Celery {total('celery'):.2f} ms" if cpu.get("celery") else ""
    return [
        f"**Why concurrency 2 against Celery is not met.** A no-op job costs sigrun {mine:.2f} ms"
        f" of CPU (its processes and redis-server){floor}{theirs}. At {mine:.2f} ms, two fully"
        f" busy cores allow at most {2000 / mine:,.0f} jobs/s, below the {celery:,.0f} jobs/s"
        " Celery's pool reaches without forking at all; most of the difference is the fork"
        " itself and the copy-on-write faults after it (see *Where a no-op job's CPU goes*)."
        f"{bare_rate} A process per job, which is what lets sigrun name an OOM kill, has a"
        " CPU floor that a pool of long-lived processes does not.",
        "",
    ]


def _cpu_bound(results: dict[str, Any], scenario: str, keys: Sequence[str]) -> list[str]:
    """The CPU each system spent per job, and the rate two cores could reach at that cost."""
    found = throughput_scenario(results, scenario)
    cpu = (found or {}).get("cpu_ms", {})
    labels: dict[str, str] = results["labels"]
    parts = []
    for key in keys:
        if cpu.get(key):
            own = statistics.median(r[0] for r in cpu[key])
            server = statistics.median(r[1] for r in cpu[key])
            # From the rounded figures printed beside it, so a reader's own division agrees.
            ceiling = (
                found["concurrency"] * 1000 / (round(own, 2) + round(server, 2)) if found else 0
            )
            parts.append(
                f"{labels[key]} {own:.2f} ms (+ {server:.2f} ms in redis-server), at most "
                f"{ceiling:,.0f} jobs/s"
            )
    if not parts:
        return []
    return [
        "- CPU per job in the same rounds, and the most that many milliseconds allow on "
        "2 fully busy cores: " + "; ".join(parts) + ". A fork per job costs CPU a pool "
        "process does not spend, whatever runs around it.",
    ]


def analysis(results: dict[str, Any]) -> list[str]:
    """What the throughput tables say, in words, from this run's own per-round ratios."""

    def ratio(scenario: str, mine: str, theirs: str) -> str:
        value = _median_ratio(results, scenario, mine, theirs)
        return "n/a" if value is None else f"{value:.2f}x"

    lines = ["## Reading the results", ""]
    if _median_ratio(results, "noop-c1", "sigrun", "bare") is not None:
        lines += [
            f"- Concurrency 1, no-op jobs: sigrun runs at {ratio('noop-c1', 'sigrun', 'bare')} "
            "of the bare fork loop. Both import the job's module once, before forking (sigrun "
            "in its fork server, on the module's first job). With `--no-preload` every child "
            "imports the module itself, after its job arrived: "
            f"{ratio('noop-c1', 'sigrun-no-preload', 'bare')} of the bare loop.",
        ]
    if _median_ratio(results, "noop-c1", "sigrun", "rq-fork") is not None:
        lines += [
            "- Against RQ's forking worker at concurrency 1: "
            f"{ratio('noop-c1', 'sigrun', 'rq-fork')} by default, "
            f"{ratio('noop-c1', 'sigrun-no-preload', 'rq-fork')} with `--no-preload` (RQ's "
            "work horse imports the job's module in every child too).",
        ]
    if _median_ratio(results, "noop-c2", "bare", "celery") is not None:
        lines += [
            "- Concurrency 2 on 2 cores is bound by CPU, not by waiting, and here fork per job "
            "meets a pool of long-lived processes. Even the bare fork loop (two of them), which "
            "does nothing but fork and acknowledge, reaches "
            f"{ratio('noop-c2', 'bare', 'celery')} of Celery without results and "
            f"{ratio('noop-c2', 'bare', 'celery-results')} of Celery with Redis results (the "
            "median of ratios taken within each round, which need not equal the ratio of the "
            "medians in the table); sigrun, which also supervises each child (pidfd, process "
            "group, output and last words, report, timeouts, OOM counter) and records a state, "
            "a result and a "
            f"timeline per job, reaches {ratio('noop-c2', 'sigrun', 'bare')} of the bare loop "
            f"({ratio('noop-c2', 'sigrun-no-preload', 'bare')} with `--no-preload`). See "
            '"Where a no-op job\'s CPU goes" below for the breakdown.',
        ]
        lines += _cpu_bound(results, "noop-c2", ("sigrun", "bare", "celery", "celery-results"))
    if _median_ratio(results, "realistic-c2", "bare", "celery") is not None:
        lines += [
            "- With a realistic job (20 MB allocated and touched, ~5 ms of CPU) the per-job "
            "overhead matters less, but a fresh child also faults in its 20 MB every time, "
            "while a pool process reuses memory its allocator kept: bare loop "
            f"{ratio('realistic-c2', 'bare', 'celery')} and sigrun "
            f"{ratio('realistic-c2', 'sigrun', 'celery')} of Celery at concurrency 2. That "
            "is the price of the isolation that lets sigrun say how a job died.",
        ]
    return [*lines, ""]


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    labels: dict[str, str] = results["labels"]
    m, v = meta["machine"], meta["versions"]
    out = [
        "# sigrun benchmarks",
        "",
        "sigrun side by side with RQ and Celery on the same machine, the same Redis and the"
        if meta.get("peers")
        else "sigrun and the bare fork loop (RQ and Celery not measured: `--no-peers`) on the"
        " same machine, the same Redis and the",
        "same job functions. Produced by `bench/run` (see `bench/`); the numbers below",
        f"are from a {meta['mode']} run. The machine is shared and noisy, so every figure is a",
        "median over rounds with its range, and every ratio is taken within one round.",
        "",
        "## Setup",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}",
        f"- date: {m['date']}; load average before the run: {m['load_before']:.2f}",
        f"- Python {m['python']}; redis-server {v.get('redis-server')};"
        f" redis-py {v.get('redis-py')}",
        f"- sigrun {v.get('sigrun')} at commit {v.get('commit')}",
    ]
    peers = meta.get("peers")
    if peers:
        out.append(
            "- peers (own virtualenv): "
            + ", ".join(f"{name} {version}" for name, version in sorted(peers.items()))
        )
    else:
        out.append("- peers: not measured in this run (`--no-peers`)")
    out += [f"- rounds: {meta['rounds']}; command: `{meta['command']}`", ""]
    if meta.get("mode") == "quick":
        out += [
            "*A smoke run*: the sizes are tiny, so its figures are coarse (CPU is counted in",
            "clock ticks of 10 ms, shared among a few dozen jobs) and say nothing about speed.",
            "",
        ]
    out += ["## Targets", "", "| target | system | measured | met |", "|---|---|---|---|"]
    for check in results["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[check["met"]]
        out.append(
            f"| {check['target']} | {labels.get(check['system'], check['system'])}"
            f" | {check['measured']} | {met} |"
        )
    out.append("")
    out += _why_not_met(results)
    if results.get("throughput"):
        out += ["## Throughput", ""]
        for scenario in results["throughput"]:
            out += [
                f"### {scenario['title']}",
                "",
                f"{scenario['n']:,} `{scenario['job']}` jobs,"
                f" concurrency {scenario['concurrency']}, "
                f"{len(next(iter(scenario['values'].values())))} round(s).",
                "",
                *throughput_table(scenario, labels),
                "",
            ]
    latency = results.get("latency")
    if latency:
        out += [
            "## Pickup latency",
            "",
            "An idle worker waits on an empty queue; one job is enqueued at a time,",
            f"{latency['count']} per round, {latency['rounds']} round(s),"
            f" {latency['gap'] * 1e3:.0f} ms apart. *start*: from just",
            "before the enqueue call to the job's first line (it appends `time.time()` to a file);",
            "*done*: to the end time the system records for the job (sigrun's `ended_at`, RQ's",
            "`ended_at`, the bare loop's own; Celery keeps none without a result backend).",
            "",
            "| system | start p50 | start p99 | start max | done p50 | done p99 |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for key, samples in latency["values"].items():
            start, done = samples["start"], samples["done"]
            cells = [
                labels[key],
                *(f"{percentile(start, p) * 1e3:.2f} ms" for p in (50, 99, 100)),
                *((f"{percentile(done, p) * 1e3:.2f} ms" if done else "—") for p in (50, 99)),
            ]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    cost = results.get("cost")
    if cost:
        out += [
            "## Redis cost per job",
            "",
            f"No-op jobs through one worker; per job = (run of {cost['big']} jobs - run of",
            f"{cost['small']}) / {cost['big'] - cost['small']}, so start-up and shut-down cancel"
            " out and heartbeats and idle polling stay in. The workers talk to Redis through a",
            "counting proxy "
            "(`bench/redisproxy.py`): *sent* counts the commands on the wire, *round trips* the",
            "exchanges in which the client sends and waits for the answer (a pipeline is one).",
            "*Executed* is the delta of `INFO commandstats` (commands inside Lua scripts count",
            "there). *Kept* is the growth of `used_memory` per finished job once the worker",
            "stopped: what stays in Redis until it expires (sigrun: `--job-ttl`, default 1 day;",
            "RQ: `result_ttl`, default 500 s; Celery keeps nothing without a result backend).",
            "It is the difference of two readings of the allocator, so a system that keeps",
            "nothing can show a small negative figure.",
            "",
            "*Keys* left per finished job, by whether Redis will expire them (a key that never",
            "expires is growth without bound).",
            "",
            "| system | round trips | commands sent | commands executed | bytes kept |"
            " keys: expiring | keys: never expiring |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for key, per in cost["values"].items():
            out.append(
                f"| {labels[key]} | {per['round_trips']:.2f} | {per['commands']:.2f} | "
                f"{per['executed']:.1f} | {round(per['memory']) or 0} | "
                f"{per.get('expiring_keys', 0):.2f} | {per.get('persistent_keys', 0):.2f} |"
            )
        out.append("")
    memory = results.get("memory")
    if memory:
        root = memory["idle"][0]["pid"]
        out += [
            "## Runner memory",
            "",
            "RSS counts a page in every process that maps it; PSS divides shared pages among",
            "them, so the PSS of all of a runner's processes added up is what the runner costs",
            "the machine (and its container's memory accounting, roughly).",
            "",
            "| when | process | RSS | PSS | private |",
            "|---|---|---:|---:|---:|",
        ]
        for when, processes in (
            ("idle", memory["idle"]),
            (f"after {memory['jobs']:,} jobs", memory["after"]),
        ):
            for p in processes:
                out.append(
                    f"| {when} | {_role(p, root)} | {p['rss'] / MiB:.1f} MiB"
                    f" | {p['pss'] / MiB:.1f} MiB | "
                    f"{p['uss'] / MiB:.1f} MiB |"
                )
            out.append(
                f"| {when} | **all** | {sum(p['rss'] for p in processes) / MiB:.1f} MiB | "
                f"{sum(p['pss'] for p in processes) / MiB:.1f} MiB | "
                f"{sum(p['uss'] for p in processes) / MiB:.1f} MiB |"
            )
        for key, processes in memory.get("peers", {}).items():
            out.append(
                f"| idle | {labels[key]} (all {len(processes)} processes) | "
                f"{sum(p['rss'] for p in processes) / MiB:.1f} MiB | "
                f"{sum(p['pss'] for p in processes) / MiB:.1f} MiB | "
                f"{sum(p['uss'] for p in processes) / MiB:.1f} MiB |"
            )
        out.append("")
    out += operator_section(results)
    notes: dict[str, list[str]] = results.get("notes", {})
    if results.get("throughput"):
        out += analysis(results)
    out += notes.get("architecture", [])
    if results.get("throughput"):
        out += breakdown.section(results, throughput_scenario(results, "noop-c2"))
        out += notes.get("tried", [])
    out += notes.get("operator", [])
    return "\n".join(out).rstrip() + "\n"


def operator_section(results: dict[str, Any]) -> list[str]:
    """The operator's reaction times: what was done, what was waited for, and the table."""
    measured = results.get("operator")
    if not measured:
        return []
    ttl, tick = measured["heartbeat_ttl"], measured["tick_seconds"]
    jobs, per = measured["backlog_jobs"], measured["jobs_per_replica"]
    out = [
        "## Operator reaction",
        "",
        "The real `sigrun operator` against the local control plane of `tests/cluster`: one",
        f"namespace, JobQueue and operator process per scenario, {measured['trials']} trials each.",
        "A time runs from just before the stimulus to the first poll that sees the effect (every",
        f"{measured['poll_seconds'] * 1e3:.0f} ms, through the API or Redis).",
        "",
        f"- *backlog*: {jobs} jobs enqueued on an idle queue ({per} jobs per replica) → the",
        f"  runner Deployment's `spec.replicas` raised from 0 to {-(-jobs // per)}.",
        "- *OOMKilled*: the pod's status patched as a kubelet reports a container restarted after",
        "  an OOM kill (`restartCount` + 1, `lastState.terminated` OOMKilled, exit 137) → one more",
        "  `DirtyExit` counted on the JobQueue's Event, which `kubectl describe jobqueue` lists.",
        "- *heartbeat lost*: the runner SIGKILLed with its job and its pod force-deleted, so no",
        "  kubelet reports the container → the job back in the pending list (retry backoff 0).",
        "  The operator records the jobs of a runner nobody saw die only once the runner's",
        f"  heartbeat (TTL {ttl:g} s) has expired, so the TTL is part of this time; the next row",
        "  subtracts it.",
        "",
        "The operator scales, and looks again at runners it waits for, on its timer (every",
        f"{tick:g} s); each stimulus comes at a random moment of that period. Pod status changes",
        "reach it at once, through its watch on runner pods.",
        "",
        "| scenario | trials | p50 | p95 | max | target | met |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    checks = {c["scenario"]: c for c in operator_checks(results)}
    words = {key: short for key, _, short, _ in operator_targets(ttl)}
    for key, s in measured["scenarios"].items():
        met = {True: "yes", False: "**no**", None: "not measured"}[checks[key]["met"]]
        out.append(_reaction_row(s["title"], s, words[key], met))
        if "minus_ttl" in s:
            minus = f"… minus the TTL ({ttl:g} s)"
            out.append(_reaction_row(minus, s["minus_ttl"], "p95 < 5 s", met))
    return [*out, ""]


def _reaction_row(title: str, s: dict[str, Any], target: str, met: str) -> str:
    cells = [title, str(len(s["seconds"])), *(f"{s[k]:.2f} s" for k in ("p50", "p95", "max"))]
    return "| " + " | ".join([*cells, target, met]) + " |"

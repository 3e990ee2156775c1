"""The report's section on where a no-op job's CPU goes, from this run's own numbers.

Two measurements meet here: the CPU and page faults of each of sigrun's
processes per job in the concurrency-2 no-op rounds (``split`` in the
throughput results, from :func:`bench.scenarios.tree_usage`), and the cost of a
fork by itself (:mod:`bench.forkfloor`).  The difference between them is what
sigrun spends around each fork, which is the part its code can change; the
floor is what no fork-per-job design avoids.  Nothing here measures.
"""

from __future__ import annotations

import statistics
from typing import Any

MiB_PER_KIB = 1 / 1024

#: (role in the split, what it is called for each system shown)
ROLES = (
    ("workers", {"sigrun": "runner", "bare": "the two loops"}),
    ("fork server", {"sigrun": "fork server"}),
    ("children", {"sigrun": "job children", "bare": "job children"}),
)


def _split(scenario: dict[str, Any], key: str) -> dict[str, tuple[float, float]]:
    """Role -> (CPU ms, faults) per job, medians over the rounds."""
    rounds = scenario.get("split", {}).get(key) or []
    if not rounds:
        return {}
    return {
        role: (
            statistics.median(r[role][0] for r in rounds),
            statistics.median(r[role][1] for r in rounds),
        )
        for role in rounds[0]
    }


def _floor(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Case key -> medians of its runs, with its label and the pages its children wrote."""
    found = {}
    for case in results.get("fork_floor") or []:
        runs = case["runs"]
        medians: dict[str, Any] = {
            name: statistics.median(run[name] for run in runs) for name in runs[0]
        }
        found[case["key"]] = {**medians, "label": case["label"], "touch": case["touch"]}
    return found


def section(results: dict[str, Any], scenario: dict[str, Any] | None) -> list[str]:
    """The section, for ``scenario``: the concurrency-2 no-op throughput results."""
    if scenario is None or not scenario.get("split"):
        return []
    labels: dict[str, str] = results["labels"]
    out = [
        "## Where a no-op job's CPU goes",
        "",
        f"Each process's CPU and minor page faults per job in the {scenario['n']:,}-job rounds",
        "at concurrency 2 above, read from `/proc` with the throughput figures (medians over",
        "rounds). A fault is taken by the first write to a page a process still shares with",
        "the one it was forked from (copy-on-write), or to a page it has not touched yet.",
        "",
        "| system | process | CPU ms per job | minor faults per job |",
        "|---|---|---:|---:|",
    ]
    for key in ("sigrun", "bare"):
        split = _split(scenario, key)
        for role, names in ROLES:
            if key in names and role in split:
                ms, faults = split[role]
                out.append(f"| {labels[key]} | {names[key]} | {ms:.2f} | {faults:.0f} |")
        if split and scenario["cpu_ms"].get(key):
            redis = statistics.median(r[1] for r in scenario["cpu_ms"][key])
            out.append(f"| {labels[key]} | redis-server | {redis:.2f} | |")
    out.append("")
    floor = _floor(results)
    if floor:
        runs = len(results["fork_floor"][0]["runs"])
        forks = results["meta"]["sizes"]["fork_floor"]
        out += [
            f"What a fork costs by itself (`bench/forkfloor.py`): {forks:,}",
            "times `fork()`, `_exit(0)` in the child, `waitpid()`, from a fresh interpreter",
            f"that has imported the modules named; medians over {runs} run(s) each.",
            "",
            "| forking process | its RSS | parent CPU ms | child CPU ms |"
            " parent faults | child faults |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for case in floor.values():
            out.append(
                f"| {case['label']} | {case['rss_kib'] * MiB_PER_KIB:.1f} MiB |"
                f" {case['parent_ms']:.2f} | {case['child_ms']:.2f} |"
                f" {case['parent_faults']:.0f} | {case['child_faults']:.0f} |"
            )
        out.append("")
    out += _reading(_split(scenario, "sigrun"), floor)
    return out


def _ms(value: float) -> float:
    return round(value, 2)


def _reading(split: dict[str, tuple[float, float]], floor: dict[str, dict[str, Any]]) -> list[str]:
    """The arithmetic that joins the two tables, in words."""
    plain, touched = floor.get("fork-server"), floor.get("fork-server-touch")
    if not split or plain is None or "fork server" not in split:
        return []
    # Sums of the figures as the tables print them, so that a reader's own sums agree.
    fork_ms = _ms(split["fork server"][0]) + _ms(split["children"][0])
    fork_faults = round(split["fork server"][1]) + round(split["children"][1])
    floor_ms = _ms(plain["parent_ms"]) + _ms(plain["child_ms"])
    floor_faults = round(plain["parent_faults"]) + round(plain["child_faults"])
    text = (
        f"From a process of the fork server's size ({plain['rss_kib'] * MiB_PER_KIB:.0f} MiB), a"
        f" child that does nothing costs {floor_ms:.2f} ms and {floor_faults:.0f} faults. sigrun's"
        f" fork server and job children spend {fork_ms:.2f} ms and {fork_faults:.0f} faults a"
        f" job, so {fork_ms - floor_ms:.2f} ms of a job is sigrun's own work around its fork:"
        " the fork server's supervision loop (the wire, the spare, pidfd, `wait4`) and the"
        " child's setup, receiving its job, running it and reporting."
    )
    extra_faults = round(touched["child_faults"]) - round(plain["child_faults"]) if touched else 0
    if touched and extra_faults > 0:
        extra_ms = _ms(touched["child_ms"]) - _ms(plain["child_ms"])
        per_fault = extra_ms / extra_faults
        beyond = fork_faults - floor_faults
        text += (
            f" A child writing {touched['touch']:.0f} more shared pages took"
            f" {extra_faults:.0f} more faults and {extra_ms:.2f}"
            f" ms more, about {per_fault * 1e3:.1f} µs a fault, so the {beyond:.0f} faults beyond"
            f" the floor account for about {beyond * per_fault:.2f} ms of it: Python code"
            " writes to the pages it shares with the process it was forked from (reference"
            " counts, the allocator's arenas) wherever it runs."
        )
    runner = floor.get("runner")
    if runner and "workers" in split:
        text += (
            f" The runner, which never forks, spends {split['workers'][0]:.2f} ms a job (asyncio,"
            " redis-py, deciding and recording); a fork from a process like it would cost"
            f" {_ms(runner['parent_ms']) + _ms(runner['child_ms']):.2f} ms by itself (the last"
            " row)."
        )
    return [text, ""]

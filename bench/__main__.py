"""``bench/run``: run the benchmarks and write BENCHMARKS.md and BENCHMARKS.json.

``bench/run`` runs ``python -P -m bench`` with sigrun's own virtualenv and a path
on which this package is found without the repository root (see that script)::

    bench/run              # the full run: the published figures (~30 min)
    bench/run --quick      # a smoke run: tiny sizes, one round, into a temp dir

It starts its own redis-server (loopback, free port, no persistence), finds or
makes the peers' virtualenv (see :mod:`bench.env`), runs each scenario for
every system in alternating rounds and writes the report.  ``--no-peers``
measures sigrun and the bare loop only (no download needed).  The ``operator``
scenario also starts the local Kubernetes control plane of ``tests/cluster``
(binaries from ``scripts/build-control-plane``, built first if missing; the run
stops at once if that fails) and times the real operator there (see :mod:`bench.reaction`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import operator
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import forkfloor, reaction, report, scenarios
from bench.env import REPO, machine, peer_env, versions
from bench.systems import (
    BARE,
    CELERY,
    CELERY_RESULTS,
    RQ_FORK,
    RQ_SIMPLE,
    SIGRUN,
    SIGRUN_NO_PRELOAD,
    Ctx,
    System,
)
from sigrun.runner.redisserver import RedisServer

SCENARIOS = ("throughput", "latency", "cost", "memory", "operator")


@dataclass(frozen=True)
class Sizes:
    """How much each scenario does: the full run's figures, or the smoke run's."""

    noop: int  # no-op jobs per throughput round
    realistic: int  # realistic jobs per throughput round
    latency: int  # jobs per latency round
    latency_rounds: int
    cost: tuple[int, int]  # the two runs whose difference is the cost per job
    memory: int  # jobs between the two memory readings
    operator: int  # trials of each operator scenario
    fork_floor: int  # forks per run of bench/forkfloor.py (one run per round)

    def jobs(self, kind: str) -> int:
        return {"noop": self.noop, "realistic": self.realistic}[kind]


FULL = Sizes(
    noop=2000, realistic=500, latency=200, latency_rounds=3, cost=(200, 1000),
    memory=10_000, operator=20, fork_floor=2000,
)  # fmt: skip
QUICK = Sizes(
    noop=60, realistic=20, latency=20, latency_rounds=1, cost=(20, 60),
    memory=300, operator=2, fork_floor=100,
)  # fmt: skip

ARCHITECTURE = [
    "## How sigrun runs a job, and what that costs",
    "",
    "`sigrun work` is two processes. The runner talks to Redis (asyncio, redis-py) and",
    "decides and records what happened; it never forks. The **fork server**",
    "(`runner/forkserver.py`) is a fresh, lean interpreter (no asyncio, no logging, no",
    "threading, no Redis client: about half the runner's memory, see *Runner memory*) from",
    "which every job's child is forked, so each fork copies fewer page tables and the fork,",
    "the child and its reaping run on another core while the runner talks to Redis. It keeps",
    "one **spare** child forked and set up ahead of need (own process group, output pipe,",
    "report file, `oom_score_adj`, cgroup): taking",
    "a job is a pipe write. The supervision code (pidfd, process group, last words, timeouts,",
    "OOM counter, `wait4`) is the same module (`runner/children.py`) the in-process",
    "supervisor uses, on a small epoll loop (`runner/reactor.py`). A busy runner records one",
    "job's outcome and takes the next one in a single pipelined round trip.",
    "By default the fork server also imports each allowed job module, on its first job",
    "(`--no-preload` leaves that to every child, for modules that must not be imported",
    "before a fork), as the bare loop does.",
    "",
]

TRIED = [
    "Tried in earlier runs of this suite and not kept: forking spares in batches (up to 6",
    "kept ready) cut the fork server's faults from ≈ 256 to ≈ 138 a job, but the children's",
    "rose by as much, for no net gain; a permanent `gc.freeze()` in the fork server made it",
    "slower; decoding the job in the spare with a leaner parser than `Job.from_json` saved",
    "≈ 14 faults a job, within the noise. At concurrency 3 on the same 2 cores sigrun ran",
    "≈ 13% faster than at 2, which bounds what fetching the next job ahead could still win at",
    "concurrency 2. Not built: a fork server that does nothing but fork, handing each child",
    "to a supervisor that never forks, so that no Python loop writes to pages shared with",
    "children; it would save part of the fork server's faults, not the children's.",
    "",
]

OPERATOR = [
    "## How the operator scenarios are driven",
    "",
    "They run the real `sigrun operator` as a process against the local control plane of",
    "`tests/cluster` (real etcd, kube-apiserver, kube-controller-manager and kube-scheduler,",
    "built by `scripts/build-control-plane`), with the helpers and stand-ins of `tests/operator`.",
    "There is no kubelet and no container runtime there, so a runner pod's container is a real",
    "`sigrun work` process carrying the pod's identity, and the kubelet is a stand-in that writes",
    "what a kubelet would (container running; restarted after an OOM kill, with the termination",
    "message) by patching the pod's status through the API. A whole-container OOM kill is played",
    "by SIGKILLing the runner and its child, as the kernel does under `memory.oom.group`.",
    "",
]

NOTES = {"architecture": ARCHITECTURE, "tried": TRIED, "operator": OPERATOR}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (CI smoke run)")
    parser.add_argument(
        "--rounds", type=int, help="rounds per throughput scenario (default 5; quick 1)"
    )
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--no-peers", action="store_true", help="sigrun and the bare loop only")
    parser.add_argument(
        "--systems", help="comma-separated subset of the systems (by key), for a quick look"
    )
    parser.add_argument("--peers-python", help="a Python that has rq and celery[redis] installed")
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for BENCHMARKS.md/.json (default: the repository root; a temporary "
        "folder with --quick)",
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="measure nothing: write BENCHMARKS.md again from a BENCHMARKS.json "
        "(next to it, or into --out)",
    )
    args = parser.parse_args(argv)
    # A SIGTERM unwinds like an exception, so redis-server and the workers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if Path(operator.__file__ or "").resolve().parent == (REPO / "operator").resolve():
        parser.error("the repository's operator/ shadows the standard library: run with python -P")
    if args.render:
        stored = json.loads(args.render.read_text())
        stored["targets"] = report.evaluate(stored)
        stored["notes"] = NOTES
        (args.render.parent / "BENCHMARKS.json").write_text(json.dumps(stored, indent=1) + "\n")
        ((args.out or args.render.parent) / "BENCHMARKS.md").write_text(report.render(stored))
        return 0
    sizes = QUICK if args.quick else FULL
    rounds = args.rounds or (1 if args.quick else 5)
    wanted = set(args.only.split(",")) if args.only else set(SCENARIOS)
    if unknown := wanted - set(SCENARIOS):
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if "operator" in wanted:
        try:
            reaction.require_control_plane(print)
        except reaction.ControlPlaneMissing as e:
            parser.exit(1, f"bench/run: {e}\n")
    out = args.out or (Path(tempfile.mkdtemp(prefix="sigrun-bench-")) if args.quick else REPO)
    out.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(message, flush=True)

    needs_peers = not args.systems or any(
        k.startswith(("rq", "celery")) for k in args.systems.split(",")
    )
    peers = None if args.no_peers or not needs_peers else peer_env(args.peers_python, log)
    results: dict[str, Any] = {
        "meta": {
            "mode": "quick" if args.quick else "full",
            "rounds": rounds,
            "command": " ".join(
                ["bench/run", shlex.join(argv if argv is not None else sys.argv[1:])]
            ).strip(),
            "machine": machine(),
            "versions": versions(),
            "peers": peers.versions if peers else None,
            "sizes": dataclasses.asdict(sizes),
        },
        "labels": {
            s.key: s.label
            for s in (SIGRUN, SIGRUN_NO_PRELOAD, BARE, RQ_FORK, RQ_SIMPLE, CELERY, CELERY_RESULTS)
        },
    }
    started = time.monotonic()
    with RedisServer() as server, tempfile.TemporaryDirectory(prefix="sigrun-bench-work-") as work:
        assert server.process is not None
        ctx = Ctx(server.url, Path(work), peers, redis_pid=server.process.pid)

        chosen = set(args.systems.split(",")) if args.systems else None

        def usable(*systems: System) -> list[System]:
            return [
                s
                for s in systems
                if (peers is not None or not s.needs_peers) and (chosen is None or s.key in chosen)
            ]

        if "throughput" in wanted:
            results["throughput"] = []
            plan = [
                ("noop-c1", "No-op jobs, concurrency 1", "noop", 1,
                 (SIGRUN, SIGRUN_NO_PRELOAD, BARE, RQ_FORK, RQ_SIMPLE)),
                ("noop-c2", "No-op jobs, concurrency 2", "noop", 2,
                 (SIGRUN, SIGRUN_NO_PRELOAD, BARE, RQ_FORK, CELERY, CELERY_RESULTS)),
                ("realistic-c1", "Realistic jobs (20 MB, ~5 ms CPU), concurrency 1", "realistic", 1,
                 (SIGRUN, SIGRUN_NO_PRELOAD, BARE, RQ_FORK, RQ_SIMPLE)),
                ("realistic-c2", "Realistic jobs (20 MB, ~5 ms CPU), concurrency 2", "realistic", 2,
                 (SIGRUN, SIGRUN_NO_PRELOAD, BARE, RQ_FORK, CELERY, CELERY_RESULTS)),
            ]  # fmt: skip
            for key, title, job, concurrency, systems in plan:
                log(f"throughput: {title}")
                n = sizes.jobs(job)
                values, cpu, split = scenarios.throughput(
                    ctx,
                    usable(*systems),
                    job=job,
                    n=n,
                    concurrency=concurrency,
                    rounds=rounds,
                    log=log,
                )
                results["throughput"].append(
                    {
                        "id": key,
                        "title": title,
                        "job": job,
                        "n": n,
                        "concurrency": concurrency,
                        "values": values,
                        "cpu_ms": cpu,
                        "split": split,
                    }
                )
            log("throughput: what a fork costs by itself")
            results["fork_floor"] = forkfloor.measure(sizes.fork_floor, repeats=rounds)
            for case in results["fork_floor"]:
                for run in case["runs"]:
                    log(
                        f"  {case['label']}: parent {run['parent_ms']:.2f} ms,"
                        f" child {run['child_ms']:.2f} ms, faults"
                        f" {run['parent_faults']:.0f} + {run['child_faults']:.0f}"
                    )
        if "latency" in wanted:
            log("pickup latency")
            count, lat_rounds, gap = sizes.latency, sizes.latency_rounds, 0.03
            timings = scenarios.latency(
                ctx, usable(SIGRUN, SIGRUN_NO_PRELOAD, BARE, RQ_FORK, CELERY),
                count=count, gap=gap, rounds=lat_rounds, log=log,
            )  # fmt: skip
            results["latency"] = {
                "count": count,
                "rounds": lat_rounds,
                "gap": gap,
                "values": timings,
            }
        if "cost" in wanted:
            log("Redis cost per job")
            small, big = sizes.cost
            per_job = scenarios.cost(
                ctx, usable(SIGRUN, BARE, RQ_FORK, RQ_SIMPLE, CELERY, CELERY_RESULTS),
                small=small, big=big, redis_port=server.port, log=log,
            )  # fmt: skip
            results["cost"] = {"small": small, "big": big, "values": per_job}
        if "memory" in wanted:
            log("runner memory")
            memory = scenarios.runner_memory(ctx, jobs=sizes.memory, log=log)
            memory["peers"] = {}
            for system, concurrency in ((RQ_FORK, 1), (CELERY, 2)):
                if peers is not None:
                    memory["peers"][system.key] = scenarios.idle_memory(
                        ctx, system, concurrency=concurrency
                    )
            results["memory"] = memory
        if "operator" in wanted:
            log("operator reaction (local control plane)")
            results["operator"] = reaction.run(
                server.url, Path(work) / "operator", trials=sizes.operator, log=log
            )
    results["meta"]["seconds"] = round(time.monotonic() - started)
    results["targets"] = report.evaluate(results)
    results["notes"] = NOTES
    (out / "BENCHMARKS.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "BENCHMARKS.md").write_text(report.render(results))
    log(
        f"wrote {out / 'BENCHMARKS.md'} and {out / 'BENCHMARKS.json'}"
        f" in {results['meta']['seconds']}s"
    )
    for check in results["targets"]:
        met = {True: "met", False: "NOT MET", None: "not measured"}[check["met"]]
        log(f"  [{met}] {check['system']}: {check['target']}: {check['measured']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

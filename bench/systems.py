"""The contenders: how to enqueue jobs for each system, start its workers and stop them.

Every system runs the same job functions (``bench/jobmods/benchjobs.py``) from
its own queue in one private Redis, in processes this module starts (and stops
by their own pid or process group, never by name):

* ``sigrun`` -- ``sigrun work`` as a user runs it (default log level INFO, so it
  pays for its two log lines a job; job modules preloaded into the fork server);
  ``sigrun --no-preload`` -- the same with every child importing its job's
  module itself, for modules that must not be imported before a fork;
* ``bare`` -- ``bench/bareloop.py``, the floor (see there);
* ``rq-fork`` -- RQ's forking ``Worker`` in burst mode; ``rq-simple`` -- RQ's
  ``SimpleWorker``, which does not fork (a reference: no isolation at all);
* ``celery`` -- a Celery prefork worker (Redis broker, no result backend: it
  records nothing per task); ``celery-results`` -- the same with Redis as the
  result backend, so that, like sigrun and RQ, it records each job's outcome.

Concurrency ``c`` means: one sigrun runner with ``--concurrency c``; ``c`` bare
loops; ``c`` RQ workers; one Celery worker with ``--concurrency c`` pool processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import redis as redis_py

from bench.env import BENCH, JOBMODS, PEERS, PeerEnv
from sigrun.runner import client
from sigrun.runner.keys import Keys

QUEUE = "bench"
#: One latency sample: when the job was enqueued, and when the system says it ended
#: (None where it keeps no end time).
Timing: TypeAlias = tuple[float, float | None]
#: (job kind, arguments, how many) in queue order; kinds: noop, realistic, stamp.
Spec = Sequence[tuple[str, list[str], int]]


@dataclass
class Ctx:
    """One benchmark run's shared things: the private Redis, a scratch folder, the peers."""

    redis_url: str
    work: Path
    peers: PeerEnv | None
    redis_pid: int | None = None  # to count redis-server's CPU per job
    redis: redis_py.Redis = field(init=False)

    def __post_init__(self) -> None:
        self.redis = redis_py.Redis.from_url(self.redis_url, decode_responses=True)

    def flush(self) -> None:
        self.redis.flushall()

    def log(self, name: str) -> Path:
        return self.work / f"{name}.log"


@dataclass
class Workers:
    """Worker processes started for one measurement."""

    processes: list[subprocess.Popen[bytes]]

    def wait(self, timeout: float) -> None:
        """Wait for burst workers to exit by themselves."""
        deadline = time.monotonic() + timeout
        for process in self.processes:
            left = max(0.1, deadline - time.monotonic())
            try:
                process.wait(left)
            except subprocess.TimeoutExpired:
                self.stop()
                raise TimeoutError(
                    f"worker pid {process.pid} still running after {timeout:g}s"
                ) from None

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM each worker (a warm shutdown everywhere), then SIGKILL its process group."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: started below
                process.wait()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]


class System:
    key = ""
    label = ""
    needs_peers = False
    burst = True  # its workers can exit once the queue is empty

    def enqueue(self, ctx: Ctx, spec: Spec) -> None:
        raise NotImplementedError

    def start(self, ctx: Ctx, *, concurrency: int, burst: bool, url: str | None = None) -> Workers:
        raise NotImplementedError

    def ready(self, ctx: Ctx, workers: Workers) -> None:
        """Block until an idle worker waits on the queue: one job went through."""
        marker = ctx.work / f"ready-{self.key}-{time.monotonic_ns()}"
        self.enqueue(ctx, [("stamp", [str(marker)], 1)])
        wait_for_file(marker, timeout=60, workers=workers)
        time.sleep(0.5)  # back to blocking on the queue

    def latency(self, ctx: Ctx, count: int, stamps: Path, gap: float) -> list[Timing]:
        """Enqueue one stamp job at a time; (enqueued_at, done_at or None) of each."""
        raise NotImplementedError


def _timings(driver_output: str) -> list[Timing]:
    """A peer driver's JSON ``[[enqueued_at, done_at or null], ...]``."""
    return [(float(e), None if d is None else float(d)) for e, d in json.loads(driver_output)]


def _popen(command: list[str], log: Path, **kwargs: object) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **kwargs,
        )


def wait_for_file(path: Path, *, timeout: float, workers: Workers | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path.name} did not appear within {timeout:g}s")
        if workers and any(p.poll() is not None for p in workers.processes):
            raise RuntimeError(
                f"a worker exited early: {[p.returncode for p in workers.processes]}"
            )
        time.sleep(0.002)


class _SigrunQueue(System):
    """Jobs in sigrun's own format and keys (sigrun and the bare loop read them)."""

    def enqueue(self, ctx: Ctx, spec: Spec) -> None:
        for kind, args, count in spec:
            for _ in range(count):
                job = client.make_job(QUEUE, f"benchjobs:{kind}", list(args), {}, max_attempts=1)
                client.enqueue_job(ctx.redis, job)  # type: ignore[arg-type]

    def latency(self, ctx: Ctx, count: int, stamps: Path, gap: float) -> list[Timing]:
        keys = Keys().queue(QUEUE)
        times: list[Timing] = []
        for _ in range(count):
            job = client.make_job(QUEUE, "benchjobs:stamp", [str(stamps)], {}, max_attempts=1)
            enqueued_at = time.time()
            client.enqueue_job(ctx.redis, job)  # type: ignore[arg-type]
            deadline = time.monotonic() + 30
            while ctx.redis.hget(keys.job(job.id), "state") not in ("succeeded", "failed"):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"job {job.id} did not finish")
                time.sleep(0.0005)
            ended = ctx.redis.hget(keys.job(job.id), "ended_at")
            times.append((enqueued_at, float(ended) if ended else None))
            time.sleep(gap)
        return times


class Sigrun(_SigrunQueue):
    key = "sigrun"
    label = "sigrun"

    def __init__(self, *extra: str, key: str = "", label: str = "") -> None:
        self.extra = extra
        if key:
            self.key, self.label = key, label

    def start(self, ctx: Ctx, *, concurrency: int, burst: bool, url: str | None = None) -> Workers:
        command = [
            sys.executable, "-P", "-m", "sigrun.runner.cli", "work",
            "--redis", url or ctx.redis_url, "--queue", QUEUE,
            "--allow-module", "benchjobs", "--path", str(JOBMODS),
            "--concurrency", str(concurrency), *self.extra,
        ]  # fmt: skip
        if burst:
            command.append("--burst")
        return Workers([_popen(command, ctx.log(self.key), cwd=ctx.work)])


class Bare(_SigrunQueue):
    key = "bare"
    label = "bare fork loop"

    def start(self, ctx: Ctx, *, concurrency: int, burst: bool, url: str | None = None) -> Workers:
        keys = Keys().queue(QUEUE)
        processes = []
        for i in range(concurrency):
            command = [
                sys.executable, "-P", str(BENCH / "bareloop.py"), url or ctx.redis_url,
                keys.pending, keys.inflight(f"bare-{i}"), keys.job(""), "--path", str(JOBMODS),
            ]  # fmt: skip
            if burst:
                command.append("--burst")
            processes.append(_popen(command, ctx.log(self.key), cwd=ctx.work))
        return Workers(processes)


class Rq(System):
    needs_peers = True

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.key = f"rq-{kind}"
        self.label = "RQ Worker (fork)" if kind == "fork" else "RQ SimpleWorker (no fork)"

    def _driver(self, ctx: Ctx, *args: str) -> list[str]:
        assert ctx.peers is not None
        return [ctx.peers.python, "-P", str(PEERS / "rq_driver.py"), *args, "--path", str(JOBMODS)]

    def enqueue(self, ctx: Ctx, spec: Spec) -> None:
        body = json.dumps([[f"benchjobs.{kind}", args, count] for kind, args, count in spec])
        subprocess.run(self._driver(ctx, "enqueue", ctx.redis_url, body), check=True)

    def start(self, ctx: Ctx, *, concurrency: int, burst: bool, url: str | None = None) -> Workers:
        command = self._driver(ctx, "work", url or ctx.redis_url, "--kind", self.kind)
        if burst:
            command.append("--burst")
        return Workers(
            [_popen(command, ctx.log(self.key), cwd=ctx.work) for _ in range(concurrency)]
        )

    def latency(self, ctx: Ctx, count: int, stamps: Path, gap: float) -> list[Timing]:
        command = self._driver(ctx, "latency", ctx.redis_url, str(count), str(stamps), str(gap))
        out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
        return _timings(out.stdout)


class Celery(System):
    needs_peers = True
    burst = False

    def __init__(self, *, results: bool) -> None:
        self.results = results
        self.key = "celery-results" if results else "celery"
        self.label = "Celery prefork, Redis results" if results else "Celery prefork, no results"

    def _env(self, url: str) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": f"{PEERS}:{JOBMODS}",
            "BENCH_REDIS_URL": url,
            "BENCH_CELERY_RESULTS": "1" if self.results else "0",
        }

    def _python(self, ctx: Ctx) -> str:
        assert ctx.peers is not None
        return ctx.peers.python

    def enqueue(self, ctx: Ctx, spec: Spec) -> None:
        body = json.dumps([[f"benchjobs.{kind}", args, count] for kind, args, count in spec])
        command = [
            self._python(ctx),
            "-P",
            str(PEERS / "celery_driver.py"),
            "enqueue",
            ctx.redis_url,
            body,
        ]
        subprocess.run(command, check=True, env=self._env(ctx.redis_url), cwd=PEERS)

    def start(self, ctx: Ctx, *, concurrency: int, burst: bool, url: str | None = None) -> Workers:
        command = [
            self._python(ctx), "-P", "-m", "celery", "-A", "celery_app", "worker",
            "--pool", "prefork", "--concurrency", str(concurrency), "--loglevel", "WARNING",
        ]  # fmt: skip
        env = self._env(url or ctx.redis_url)
        return Workers([_popen(command, ctx.log(self.key), cwd=PEERS, env=env)])

    def latency(self, ctx: Ctx, count: int, stamps: Path, gap: float) -> list[Timing]:
        command = [
            self._python(ctx), "-P", str(PEERS / "celery_driver.py"), "latency",
            ctx.redis_url, str(count), str(stamps), str(gap),
        ]  # fmt: skip
        out = subprocess.run(
            command, check=True, capture_output=True, text=True, timeout=600,
            env=self._env(ctx.redis_url), cwd=PEERS,
        )  # fmt: skip
        return _timings(out.stdout)


SIGRUN = Sigrun()
SIGRUN_NO_PRELOAD = Sigrun("--no-preload", key="sigrun-no-preload", label="sigrun --no-preload")
BARE = Bare()
RQ_FORK = Rq("fork")
RQ_SIMPLE = Rq("simple")
CELERY = Celery(results=False)
CELERY_RESULTS = Celery(results=True)

"""The operator's reaction times (issue #5): from something happening to the operator acting on it.

Three scenarios, each in a namespace of its own, with a ``sigrun operator`` process of its own
watching one JobQueue there:

* ``backlog``: jobs appear on an idle queue -> the runner Deployment's ``spec.replicas`` is
  raised (the autoscaler runs on the operator's tick);
* ``oom``: the kubelet reports the runner container restarted after an OOM kill -> a
  ``DirtyExit`` Event on the JobQueue, among the Events ``kubectl describe jobqueue`` lists (the
  pod watch reacts at once);
* ``heartbeat``: a runner is SIGKILLed and its pod vanishes without a report (node lost, force
  delete) -> once the runner's heartbeat has expired, its job is back in the pending list.

Why the test harness and not a harness of its own: these are the code paths that
``tests/operator`` proves correct, on the same real control plane (``tests/cluster``: etcd,
kube-apiserver, kube-controller-manager, kube-scheduler) and with the same stand-ins for what
cannot run here (``tests/operator/standins.py``: runner containers are real ``sigrun work``
processes; the kubelet is played by patching pod status through the API).  Timing code that
drove its own copies could drift from what the tests check.

Why each stimulus waits a random fraction of a tick first: scaling and the heartbeat check run on
the operator's timer, so a stimulus given right after the previous trial settled would always
land just after a tick (nearly the worst case every time).  Effects are polled every
:data:`POLL` seconds through the API or Redis; a figure includes up to one poll and one request.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis as redis_py

from bench.env import REPO
from bench.report import percentile
from sigrun.operator.handlers import RETRY_SECONDS, TICK_SECONDS
from sigrun.runner import client
from sigrun.runner.jobs import job_id_of_raw
from sigrun.runner.keys import Keys
from sigrun.runner.redisio import SyncRedis, connect
from tests.cluster.controlplane import Cluster, ControlPlaneError, resolve_binaries, wait_for
from tests.operator.standins import KubeletStandIn, RunnerStandIn, wait_for_file
from tests.operator.support import (
    CRD_FILE,
    JOBS,
    OperatorProcess,
    events,
    get_deployment,
    jobqueue,
    kubectl_apply,
    runner_pods,
    wait_condition,
)

Log = Callable[[str], None]
Pod = dict[str, Any]

JOBQUEUE = "reaction"
#: The smallest ``spec.runner.heartbeatTTLSeconds`` the CRD accepts: the heartbeat scenario
#: waits for it to run out, so a short one keeps the trials short.
TTL = 3
POLL = 0.02
#: Backlog jobs per trial: with 10 jobs per replica, a step from 0 to 3 replicas.
BACKLOG = 25
JOBS_PER_REPLICA = 10
TIMEOUT = 30.0

TITLES = {
    "backlog": "backlog appears → Deployment replicas raised",
    "oom": "pod OOMKilled status → DirtyExit Event",
    "heartbeat": "runner heartbeat lost → job requeued",
}


class ControlPlaneMissing(Exception):
    """The control-plane binaries are not built: the operator scenario cannot run."""


def require_control_plane(log: Log) -> None:
    """Build the control plane if it is missing (once, then cached), as ``scripts/test`` does,
    so that the one command works on a clean clone; fail before any measuring starts, rather
    than after the other scenarios' minutes, if it cannot be had."""
    try:
        resolve_binaries()
        return
    except ControlPlaneError:
        log("the operator scenario needs the local control plane: scripts/build-control-plane")
    build = subprocess.run([str(REPO / "scripts" / "build-control-plane")], check=False)
    try:
        resolve_binaries()
    except ControlPlaneError as e:
        raise ControlPlaneMissing(
            f"the operator scenario needs the local Kubernetes control plane: {e}"
            f" (scripts/build-control-plane exited {build.returncode};"
            " or leave the scenario out: --only throughput,latency,cost,memory)"
        ) from e


@dataclass
class Stage:
    """One scenario's namespace, JobQueue and Redis queue, with what the trials act through."""

    cluster: Cluster
    namespace: str
    queue: str
    redis_url: str
    redis: SyncRedis
    raw: redis_py.Redis
    work: Path
    kubelet: KubeletStandIn

    @property
    def pending_key(self) -> str:
        return Keys().queue(self.queue).pending

    def replicas(self) -> int:
        deployment = get_deployment(self.cluster, self.namespace, f"{JOBQUEUE}-runner") or {}
        return int(deployment.get("spec", {}).get("replicas", -1))

    def dirty_exits(self) -> int:
        """DirtyExit occurrences on the JobQueue: the operator counts repeats on one Event."""
        found = events(self.cluster, self.namespace, JOBQUEUE, "DirtyExit")
        return sum(int(e.get("count") or 1) for e in found)

    def pending_ids(self) -> set[str]:
        return {job_id_of_raw(p) or "" for p in self.raw.lrange(self.pending_key, 0, -1)}

    def pods(self) -> list[Pod]:
        return runner_pods(self.cluster, self.namespace, JOBQUEUE)

    def only_pod(self) -> Pod | None:
        """The runner pod of a JobQueue pinned at one, once there is exactly one."""
        found = self.pods()
        return found[0] if len(found) == 1 else None

    def empty_queue(self) -> None:
        """Nothing left over for the next trial's runner to take first."""
        self.raw.delete(self.pending_key)


@dataclass
class Holding:
    """A runner stand-in for a pod, running one job that waits until it is killed."""

    runner: RunnerStandIn
    job: str
    pid: int

    def termination_message(self) -> str | None:
        """What the kubelet would copy into the pod status, once it names the job."""
        message = self.runner.termination_message()
        return message if self.job in message else None


@dataclass(frozen=True)
class Scenario:
    """One scenario: its trial, the JobQueue spec it needs, and what it reports besides."""

    key: str
    trial: Callable[[Stage], float]
    spec: dict[str, Any]
    check: Callable[[Stage], None] | None = None  # once, after the trials
    minus: float | None = None  # also report the times minus this (the heartbeat TTL)


def run(redis_url: str, work: Path, *, trials: int, log: Log) -> dict[str, Any]:
    """Start a control plane, time each scenario ``trials`` times, stop it; plain data out."""
    began = time.monotonic()
    rng = random.Random(5)  # the tick phases: different per trial, the same per run
    cluster = Cluster.start(work / "cluster", owner_pid=os.getpid())
    started = time.monotonic() - began
    log(f"  control plane up in {started:.1f} s")
    try:
        install_crd(cluster)
        plan = [
            Scenario("backlog", backlog_trial(rng), backlog_spec()),
            Scenario("oom", oom_trial(rng), pinned_spec(retry=None), check=confirm_described),
            Scenario(
                "heartbeat",
                heartbeat_trial(rng),
                pinned_spec(retry={"backoffSeconds": 0}),  # requeued at once, not in a backoff
                minus=TTL,
            ),
        ]
        scenarios = {
            s.key: measure(cluster, redis_url, work, s, trials=trials, log=log) for s in plan
        }
    finally:
        cluster.stop()
    return {
        "trials": trials,
        "tick_seconds": TICK_SECONDS,
        "retry_seconds": RETRY_SECONDS,
        "heartbeat_ttl": TTL,
        "poll_seconds": POLL,
        "backlog_jobs": BACKLOG,
        "jobs_per_replica": JOBS_PER_REPLICA,
        "cluster_start_seconds": round(started, 1),
        "wall_seconds": round(time.monotonic() - began, 1),
        "scenarios": scenarios,
    }


def measure(
    cluster: Cluster, redis_url: str, work: Path, scenario: Scenario, *, trials: int, log: Log
) -> dict[str, Any]:
    log(f"operator: {TITLES[scenario.key]} ({trials} trials)")
    began = time.monotonic()
    with stage(cluster, redis_url, work, scenario.key, log, **scenario.spec) as st:
        seconds = [scenario.trial(st) for _ in range(trials)]
        if scenario.check is not None:
            scenario.check(st)
    result = {"title": TITLES[scenario.key], **summary(seconds)}
    if scenario.minus is not None:
        result["minus_ttl"] = summary([s - scenario.minus for s in seconds])
    result["wall_seconds"] = round(time.monotonic() - began, 1)
    log(
        f"  p50 {result['p50']:.2f} s, p95 {result['p95']:.2f} s, max {result['max']:.2f} s"
        f" ({result['wall_seconds']:.0f} s)"
    )
    return result


def summary(seconds: list[float]) -> dict[str, Any]:
    return {
        "seconds": [round(s, 4) for s in seconds],
        "p50": percentile(seconds, 50),
        "p95": percentile(seconds, 95),
        "max": max(seconds),
    }


# -- the control plane and the operator ---------------------------------------------------------


def install_crd(cluster: Cluster) -> None:
    """The JobQueue CRD from the very file the chart ships, as the operator tests apply it."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/jobqueues.sigrun.dev", "--timeout=30s"
    )


def backlog_spec() -> dict[str, Any]:
    """Autoscaled from zero; no cooldown, so each trial starts again from zero quickly."""
    scaling = {"minReplicas": 0, "maxReplicas": 12, "jobsPerReplica": JOBS_PER_REPLICA}
    return {"scaling": {**scaling, "cooldownSeconds": 0}}


def pinned_spec(*, retry: dict[str, Any] | None) -> dict[str, Any]:
    """One runner pod, always (no autoscaling in the way), the shortest heartbeat TTL."""
    return {
        "runner": {"heartbeatTTLSeconds": TTL, "resources": {"limits": {"memory": "512Mi"}}},
        "scaling": {"minReplicas": 1, "maxReplicas": 1, "cooldownSeconds": 600},
        "retry": retry,
    }


@contextlib.contextmanager
def stage(
    cluster: Cluster,
    redis_url: str,
    work: Path,
    key: str,
    log: Log,
    *,
    runner: dict[str, Any] | None = None,
    scaling: dict[str, Any] | None = None,
    retry: dict[str, Any] | None = None,
) -> Iterator[Stage]:
    """A fresh namespace, a JobQueue in it, and ``sigrun operator --namespace`` for it alone."""
    namespace = f"bench-{key}-{secrets.token_hex(3)}"
    folder = work / key
    folder.mkdir(parents=True)
    queue = f"reaction-{key}"
    cluster.create_namespace(namespace)
    operator = OperatorProcess(cluster, namespace, folder / "operator.log")
    redis, raw = connect(redis_url), redis_py.Redis.from_url(redis_url, decode_responses=True)
    try:
        operator.start()
        manifest = jobqueue(JOBQUEUE, redis_url, [queue], runner=runner, scaling=scaling)
        if retry is not None:
            manifest["spec"]["retry"] = retry
        kubectl_apply(cluster, namespace, manifest)
        wait_condition(cluster, namespace, JOBQUEUE, "Ready", "True", timeout=60)
        kubelet = KubeletStandIn(cluster)
        yield Stage(cluster, namespace, queue, redis_url, redis, raw, folder, kubelet)
    except BaseException:
        if operator.log.exists():  # what the operator said is what explains a timeout
            tail = operator.log.read_text(errors="replace").splitlines()[-20:]
            log(f"operator log {operator.log} ends:\n" + "\n".join(tail))
        raise
    finally:
        operator.stop()
        redis.close()
        raw.close()
        cluster.delete_namespace(namespace)


def react(
    rng: random.Random,
    stimulus: Callable[[], object],
    effect: Callable[[], bool],
    *,
    what: str,
    timeout: float = TIMEOUT,
) -> float:
    """Seconds from just before ``stimulus()`` until ``effect()`` holds, at a random tick phase."""
    time.sleep(rng.uniform(0, TICK_SECONDS))
    began = time.monotonic()
    stimulus()
    wait_for(lambda: effect() or None, what=what, timeout=timeout, interval=POLL)
    return time.monotonic() - began


# -- the scenarios ------------------------------------------------------------------------------


def backlog_trial(rng: random.Random) -> Callable[[Stage], float]:
    wanted = math.ceil(BACKLOG / JOBS_PER_REPLICA)

    def trial(st: Stage) -> float:
        wait_for(lambda: st.replicas() == 0, what="the runners scaled back to zero", timeout=60)

        def enqueue() -> None:
            for _ in range(BACKLOG):
                client.enqueue(st.redis, st.queue, f"{JOBS}:noop")

        seconds = react(
            rng, enqueue, lambda: st.replicas() >= wanted, what=f"{wanted} runner replicas"
        )
        st.empty_queue()  # no runner takes them (pods never run here); the next trial scales down
        return seconds

    return trial


def oom_trial(rng: random.Random) -> Callable[[Stage], float]:
    """The same pod each time, as a container that OOMs again and again: restartCount rises."""
    restarts = 0

    def trial(st: Stage) -> float:
        nonlocal restarts
        pod = wait_for(st.only_pod, what="the runner pod")
        # One attempt only: a retry coming due would be taken by a later trial's runner.
        held = hold(st, pod, max_attempts=1)
        try:
            message = wait_for(held.termination_message, what="the termination log naming the job")
            held.runner.oom_kill([held.pid])  # the kernel kills the whole container
            restarts += 1
            last = KubeletStandIn.terminated("OOMKilled", 137, message)
            before = st.dirty_exits()
            return react(
                rng,
                lambda: st.kubelet.running(pod, restarts=restarts, last=last),
                lambda: st.dirty_exits() > before,
                what="a DirtyExit Event",
            )
        finally:
            held.runner.stop()

    return trial


def heartbeat_trial(rng: random.Random) -> Callable[[Stage], float]:
    """A new pod each time: the ReplicaSet replaces the one the trial force-deleted."""
    seen: set[str] = set()

    def fresh_pod(st: Stage) -> Pod | None:
        new = [p for p in st.pods() if p["metadata"]["uid"] not in seen]
        return new[0] if new else None

    def trial(st: Stage) -> float:
        pod = wait_for(lambda: fresh_pod(st), what="a new runner pod")
        seen.add(pod["metadata"]["uid"])
        st.kubelet.running(pod)  # a container once seen running: its loss is a death
        held = hold(st, pod, max_attempts=3)

        def lose() -> None:
            held.runner.oom_kill([held.pid])  # SIGKILL: its heartbeat stops with it
            force_delete(st, pod)  # and nobody will report its container (node lost)

        try:
            seconds = react(
                rng,
                lose,
                lambda: held.job in st.pending_ids(),
                what="the lost runner's job back in the queue",
                timeout=TTL + TIMEOUT,
            )
        finally:
            held.runner.stop()
        st.empty_queue()
        return seconds

    return trial


# -- what the trials share ----------------------------------------------------------------------


def hold(st: Stage, pod: Pod, *, max_attempts: int) -> Holding:
    """A runner stand-in for ``pod`` running one job that waits until it is killed."""
    marker = st.work / f"running-{secrets.token_hex(4)}"
    never = st.work / "never-released"
    job = client.enqueue(
        st.redis, st.queue, f"{JOBS}:hold", str(marker), str(never), max_attempts=max_attempts
    )
    runner = RunnerStandIn(
        pod, redis_url=st.redis_url, queues=[st.queue], workdir=st.work, heartbeat_ttl=TTL
    )
    try:
        pid = int(wait_for_file(marker))
    except BaseException:
        runner.stop()
        raise
    return Holding(runner, job, pid)


def force_delete(st: Stage, pod: Pod) -> None:
    """``kubectl delete --grace-period=0 --force``: the object goes, no kubelet confirms."""
    meta = pod["metadata"]
    st.cluster.rest().request(
        "DELETE",
        f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
        {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0},
    )


def confirm_described(st: Stage) -> None:
    """What the trials polled is what a user reads: the Event in ``kubectl describe``."""
    described = st.cluster.kubectl("describe", "jobqueue", JOBQUEUE, "-n", st.namespace).stdout
    if "DirtyExit" not in described or "OOMKilled" not in described:
        raise RuntimeError(f"kubectl describe jobqueue shows no OOMKilled DirtyExit:\n{described}")

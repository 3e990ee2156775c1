"""Runner deaths read from a pod's status: what died, when, why.  Pure: no I/O, no clock.

A runner that dies as a whole cannot report its own jobs.  The kubelet does
report the death, in the pod's status, and this module reads it:

* ``restartCount`` rose: the container restarted in place (an OOM kill under
  ``memory.oom.group``, a crash); ``lastState.terminated`` describes the dead one;
* ``state.terminated``: the container is dead now (evicted pod, pod shutting down);
* the pod is gone (a DELETED watch event) without a report of its container:
  force-deleted, or its node vanished.  Such a death is *unconfirmed*: the
  runner may still be alive somewhere, so its jobs are recorded only once its
  heartbeat has expired.

Exit code 137 alone says only "SIGKILL" (an OOM kill, an eviction, a grace
period that ran out, a liveness probe), and the CRI never fills ``signal``.
:func:`classify` combines the container's ``reason``, the pod's ``reason``, the
``DisruptionTarget`` condition and ``deletionTimestamp``, in that order of
precedence.  The runner's termination-message JSON (``{"runner": ..., "jobs":
[...]}``) names the dead runner exactly; anything else in it is ignored.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sigrun.runner.exits import signal_name
from sigrun.runner.jobs import Cause

RUNNER_CONTAINER = "runner"

# DisruptionTarget reasons (pod-disruption-conditions), and what they mean for the jobs.
_DISRUPTIONS: Mapping[str, Cause] = {
    "PreemptionByScheduler": Cause.PREEMPTED,
    "DeletionByTaintManager": Cause.NODE_LOST,  # NoExecute taint, usually node unreachable
    "DeletionByPodGC": Cause.NODE_LOST,  # the pod's node object is gone
    "EvictionByEvictionAPI": Cause.EVICTED,  # kubectl drain, a PodDisruptionBudget-aware eviction
    "TerminationByKubelet": Cause.EVICTED,  # node-pressure eviction, graceful node shutdown
}
_POD_REASONS: Mapping[str, Cause] = {
    "Evicted": Cause.EVICTED,
    "Preempting": Cause.PREEMPTED,  # kubelet admission preemption for a critical pod
    "Terminated": Cause.EVICTED,  # graceful node shutdown
    "NodeShutdown": Cause.EVICTED,
    "NodeLost": Cause.NODE_LOST,
}


@dataclass(frozen=True)
class Death:
    """One dead runner container, as far as the pod's status tells."""

    namespace: str
    pod_name: str
    pod_uid: str
    jobqueue: str
    cause: Cause
    summary: str  # "runner container OOMKilled (exit 137) in pod X: memory limit 512Mi"
    confirmed: bool  # the kubelet reported the container dead (not merely the pod gone)
    finished_at: float | None = None
    exit_code: int | None = None
    runner_id: str | None = None  # from the termination message
    job_ids: tuple[str, ...] = ()
    memory_limit: str | None = None
    node: str | None = None

    @property
    def key(self) -> str:
        """Identifies this death across repeated watch events (kopf replays on restart)."""
        return f"{self.pod_uid}/{self.runner_id or ''}/{self.finished_at or ''}/{self.confirmed}"

    @property
    def signal(self) -> int | None:
        return self.exit_code - 128 if self.exit_code and self.exit_code > 128 else None


@dataclass(frozen=True)
class PodFacts:
    """What every death of one pod shares."""

    namespace: str
    pod_name: str
    pod_uid: str
    jobqueue: str
    memory_limit: str | None
    node: str | None

    def death(self, *, cause: Cause, summary: str, confirmed: bool, **more: Any) -> Death:
        return Death(
            namespace=self.namespace,
            pod_name=self.pod_name,
            pod_uid=self.pod_uid,
            jobqueue=self.jobqueue,
            memory_limit=self.memory_limit,
            node=self.node,
            cause=cause,
            summary=summary,
            confirmed=confirmed,
            **more,
        )


@dataclass(frozen=True)
class Termination:
    """``ContainerStateTerminated`` with the fields that matter."""

    exit_code: int | None
    reason: str
    message: str
    finished_at: float | None
    container_id: str

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> Termination | None:
        if not raw:
            return None
        code = raw.get("exitCode")
        return cls(
            exit_code=code if isinstance(code, int) else None,
            reason=str(raw.get("reason") or ""),
            message=str(raw.get("message") or ""),
            finished_at=parse_time(raw.get("finishedAt")),
            container_id=str(raw.get("containerID") or ""),
        )


def deaths_of(
    pod: Mapping[str, Any],
    *,
    deleted: bool,
    previous_restarts: int | None,
    container: str = RUNNER_CONTAINER,
) -> list[Death]:
    """Every runner death this pod status shows; empty for a healthy or drained-and-gone pod.

    ``previous_restarts`` is the restart count seen last time (None: never seen,
    e.g. after an operator restart; then an old ``lastState`` counts again, and
    recording stays exactly-once because the jobs are gone from Redis).
    """
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    labels = meta.get("labels") or {}
    base = PodFacts(
        namespace=str(meta.get("namespace", "")),
        pod_name=str(meta.get("name", "")),
        pod_uid=str(meta.get("uid", "")),
        jobqueue=str(labels.get("sigrun.dev/jobqueue", "")),
        memory_limit=_memory_limit(spec, container),
        node=spec.get("nodeName"),
    )
    found: list[Death] = []
    state: Mapping[str, Any] = {}
    for cs in status.get("containerStatuses") or ():
        if cs.get("name") != container:
            continue
        restarts = int(cs.get("restartCount") or 0)
        last = Termination.parse((cs.get("lastState") or {}).get("terminated"))
        if last is not None and (previous_restarts is None or restarts > previous_restarts):
            # The container restarted in place: the pod itself was neither evicted nor
            # deleted at that moment, so only the container's own report counts.
            found.append(_death(base, last, pod={}, deleting=False))
        state = cs.get("state") or {}
        now = Termination.parse(state.get("terminated"))
        if now is not None:
            found.append(_death(base, now, pod=pod, deleting=deleted or _deleting(meta)))
    if deleted and state and not state.get("terminated"):
        # The pod is gone and its container was last seen alive (running, or waiting to
        # restart): nobody saw it die.  A pod whose container never started held no runner.
        cause, why = classify(None, pod, deleting=True)
        found.append(
            base.death(cause=cause, summary=f"runner pod {base.pod_name} {why}", confirmed=False)
        )
    return found


def classify(
    term: Termination | None, pod: Mapping[str, Any], *, deleting: bool
) -> tuple[Cause, str]:
    """The cause, and the words for it ("evicted: The node was low on resource: memory.")."""
    if term is not None and term.reason == "OOMKilled":
        return Cause.OOM_KILLED, "OOMKilled"
    status = pod.get("status") or {}
    target = disruption_target(status)
    if target is not None:
        reason, message = target
        cause = _DISRUPTIONS.get(reason)
        if cause is not None:
            return cause, _words(cause, f"{reason}: {message}" if message else reason)
    pod_reason = str(status.get("reason") or "")
    if pod_reason in _POD_REASONS:
        cause = _POD_REASONS[pod_reason]
        message = str(status.get("message") or "")
        return cause, _words(cause, message or pod_reason)
    if deleting:
        if term is None:
            return (
                Cause.DELETED,
                "deleted with no report of its container (force-deleted, or its node is gone)",
            )
        if term.exit_code == 137:
            return Cause.DELETED, "deleted; the runner was killed when the grace period ran out"
        return Cause.DELETED, "deleted"
    return Cause.RUNNER_LOST, "died"


def _words(cause: Cause, detail: str) -> str:
    verb = {
        Cause.EVICTED: "evicted",
        Cause.PREEMPTED: "preempted",
        Cause.NODE_LOST: "lost with its node",
    }.get(cause, str(cause))
    return f"{verb} ({detail})"


def _death(base: PodFacts, term: Termination, *, pod: Mapping[str, Any], deleting: bool) -> Death:
    cause, why = classify(term, pod, deleting=deleting)
    runner_id, job_ids = parse_termination_message(term.message)
    return base.death(
        cause=cause,
        summary=_summary(base, term, cause, why),
        confirmed=True,
        finished_at=term.finished_at,
        exit_code=term.exit_code,
        runner_id=runner_id,
        job_ids=job_ids,
    )


def _summary(base: PodFacts, term: Termination, cause: Cause, why: str) -> str:
    pod = base.pod_name
    code = describe_exit(term.exit_code)
    if cause is Cause.OOM_KILLED:
        limit = base.memory_limit
        return f"runner container OOMKilled ({code}) in pod {pod}" + (
            f": memory limit {limit}" if limit else ""
        )
    if cause is Cause.RUNNER_LOST:
        reason = f", reason {term.reason}" if term.reason else ""
        hint = (
            " and no OOM report (a liveness probe, a kill by hand, or an OOM the runtime missed)"
            if term.exit_code == 137
            else ""
        )
        return f"runner container in pod {pod} {why} ({code}{reason}){hint}"
    return f"runner pod {pod} {why} (container {code})"


def describe_exit(code: int | None) -> str:
    """137 -> "exit 137, SIGKILL"; 1 -> "exit 1"."""
    if code is None:
        return "exit code unknown"
    if code > 128:
        return f"exit {code}, {signal_name(code - 128)}"
    return f"exit {code}"


def parse_termination_message(message: str) -> tuple[str | None, tuple[str, ...]]:
    """The runner id and job ids the runner wrote; (None, ()) for anything else."""
    try:
        body = json.loads(message)
    except (ValueError, TypeError):
        return None, ()
    if not isinstance(body, dict):
        return None, ()
    runner = body.get("runner")
    jobs = body.get("jobs")
    runner_id = runner if isinstance(runner, str) and runner else None
    job_ids: Sequence[Any] = jobs if isinstance(jobs, list) else ()
    return runner_id, tuple(j for j in job_ids if isinstance(j, str) and j)


def disruption_target(status: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) of a true ``DisruptionTarget`` condition, if the pod has one."""
    for condition in status.get("conditions") or ():
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            return str(condition.get("reason") or ""), str(condition.get("message") or "")
    return None


def _deleting(meta: Mapping[str, Any]) -> bool:
    return bool(meta.get("deletionTimestamp"))


def _memory_limit(spec: Mapping[str, Any], container: str) -> str | None:
    for c in spec.get("containers") or ():
        if c.get("name") == container:
            limit = ((c.get("resources") or {}).get("limits") or {}).get("memory")
            return str(limit) if limit is not None else None
    return None


def restart_count(pod: Mapping[str, Any], container: str = RUNNER_CONTAINER) -> int | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or ():
        if cs.get("name") == container:
            return int(cs.get("restartCount") or 0)
    return None


def parse_time(raw: object) -> float | None:
    """RFC 3339 as the API writes it ("2026-01-02T03:04:05Z") -> epoch seconds."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return dt.datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None

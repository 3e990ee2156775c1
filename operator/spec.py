"""The JobQueue resource as typed, validated values: parsed once, at the boundary.

The API server already enforced the CRD's schema (types, minimums, enums, CEL
rules), so parsing here should never fail on a stored object; it still checks
what the code relies on, so a hand-made body in a test or an older CRD without
some default gives a :class:`SpecError` that names the field instead of a
``KeyError`` deep inside a handler.  Defaults repeat the CRD's on purpose.

Pure: no I/O, no kopf, no Kubernetes client.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sigrun.runner.errors import SigrunError
from sigrun.runner.keys import DEFAULT_PREFIX

GROUP = "sigrun.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "JobQueue"
PLURAL = "jobqueues"


class SpecError(SigrunError):
    """A JobQueue spec that the operator cannot turn into runners."""


@dataclass(frozen=True)
class QueueRef:
    """Which JobQueue: what Events and owner references need."""

    namespace: str
    name: str
    uid: str

    @property
    def path(self) -> str:
        return f"/apis/{API_VERSION}/namespaces/{self.namespace}/{PLURAL}/{self.name}"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str


@dataclass(frozen=True)
class RedisSpec:
    url: str
    password: SecretRef | None = None
    prefix: str = DEFAULT_PREFIX


@dataclass(frozen=True)
class EnvVar:
    """One extra environment variable for the job code (never a ``SIGRUN_*`` one)."""

    name: str
    value: str | None = None
    value_from: Mapping[str, Any] | None = None

    def manifest(self) -> dict[str, Any]:
        if self.value_from is not None:
            return {"name": self.name, "valueFrom": dict(self.value_from)}
        return {"name": self.name, "value": self.value or ""}


@dataclass(frozen=True)
class RunnerSpec:
    allowed_modules: tuple[str, ...]
    image: str = ""
    image_pull_policy: str | None = None
    concurrency: int = 1
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    grace_seconds: int = 30
    termination_grace_period_seconds: int | None = None
    timeout_seconds: float | None = None
    heartbeat_ttl_seconds: int = 30
    preload: bool = True
    env: tuple[EnvVar, ...] = ()
    service_account_name: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)

    @property
    def pod_grace_seconds(self) -> int:
        """The kubelet's budget: the runner's own grace plus time to requeue and deregister."""
        if self.termination_grace_period_seconds is not None:
            return self.termination_grace_period_seconds
        return self.grace_seconds + 15

    @property
    def memory_limit(self) -> str | None:
        return self.resources.get("limits", {}).get("memory")


@dataclass(frozen=True)
class ScalingSpec:
    min_replicas: int = 0
    max_replicas: int = 10
    jobs_per_replica: int = 10
    cooldown_seconds: int = 60


@dataclass(frozen=True)
class RetrySpec:
    backoff_seconds: float = 10.0


@dataclass(frozen=True)
class JobQueueSpec:
    queues: tuple[str, ...]
    redis: RedisSpec
    runner: RunnerSpec
    scaling: ScalingSpec = field(default_factory=ScalingSpec)
    retry: RetrySpec = field(default_factory=RetrySpec)


def parse_spec(raw: Mapping[str, Any]) -> JobQueueSpec:
    """The typed spec, or :class:`SpecError` naming the first field that cannot work."""
    queues = _strings(raw.get("queues"), "spec.queues")
    if not queues:
        raise SpecError("spec.queues must name at least one queue")
    for queue in queues:
        if "{" in queue or "}" in queue:
            raise SpecError(f"spec.queues: queue name {queue!r} must not contain braces")

    redis_raw = _mapping(raw.get("redis"), "spec.redis")
    url = redis_raw.get("url")
    if not isinstance(url, str) or not url:
        raise SpecError("spec.redis.url is required")
    ref_raw = redis_raw.get("passwordSecretRef")
    password = None
    if ref_raw is not None:
        ref = _mapping(ref_raw, "spec.redis.passwordSecretRef")
        name, key = ref.get("name"), ref.get("key", "password")
        if not isinstance(name, str) or not name or not isinstance(key, str) or not key:
            raise SpecError("spec.redis.passwordSecretRef needs a name and a key")
        password = SecretRef(name, key)
    redis = RedisSpec(
        url=url, password=password, prefix=str(redis_raw.get("prefix", DEFAULT_PREFIX))
    )

    runner = _runner(_mapping(raw.get("runner"), "spec.runner"))
    scaling = _scaling(_mapping(raw.get("scaling", {}), "spec.scaling"))
    retry_raw = _mapping(raw.get("retry", {}), "spec.retry")
    backoff = _number(retry_raw.get("backoffSeconds", 10), "spec.retry.backoffSeconds", minimum=0)
    return JobQueueSpec(
        queues=queues, redis=redis, runner=runner, scaling=scaling, retry=RetrySpec(backoff)
    )


def _runner(raw: Mapping[str, Any]) -> RunnerSpec:
    modules = _strings(raw.get("allowedModules"), "spec.runner.allowedModules")
    if not modules:
        raise SpecError("spec.runner.allowedModules must name at least one module prefix")
    grace = _integer(raw.get("graceSeconds", 30), "spec.runner.graceSeconds", minimum=0)
    pod_grace_raw = raw.get("terminationGracePeriodSeconds")
    pod_grace = None
    if pod_grace_raw is not None:
        pod_grace = _integer(pod_grace_raw, "spec.runner.terminationGracePeriodSeconds", minimum=0)
        if pod_grace <= grace:
            raise SpecError(
                "spec.runner.terminationGracePeriodSeconds must be greater than graceSeconds"
            )
    timeout_raw = raw.get("timeoutSeconds")
    env = tuple(_env(item, i) for i, item in enumerate(raw.get("env") or ()))
    resources = {
        kind: {str(k): str(v) for k, v in _mapping(values, f"spec.runner.resources.{kind}").items()}
        for kind, values in _mapping(raw.get("resources", {}), "spec.runner.resources").items()
    }
    selector = _mapping(raw.get("nodeSelector", {}), "spec.runner.nodeSelector")
    return RunnerSpec(
        allowed_modules=modules,
        image=str(raw.get("image") or ""),
        image_pull_policy=raw.get("imagePullPolicy"),
        concurrency=_integer(raw.get("concurrency", 1), "spec.runner.concurrency", minimum=1),
        resources=resources,
        grace_seconds=grace,
        termination_grace_period_seconds=pod_grace,
        timeout_seconds=(
            None
            if timeout_raw is None
            else _number(timeout_raw, "spec.runner.timeoutSeconds", minimum=0, exclusive=True)
        ),
        heartbeat_ttl_seconds=_integer(
            raw.get("heartbeatTTLSeconds", 30), "spec.runner.heartbeatTTLSeconds", minimum=3
        ),
        preload=_boolean(raw.get("preload", True), "spec.runner.preload"),
        env=env,
        service_account_name=raw.get("serviceAccountName") or None,
        node_selector={str(k): str(v) for k, v in selector.items()},
    )


def _scaling(raw: Mapping[str, Any]) -> ScalingSpec:
    spec = ScalingSpec(
        min_replicas=_integer(raw.get("minReplicas", 0), "spec.scaling.minReplicas", minimum=0),
        max_replicas=_integer(raw.get("maxReplicas", 10), "spec.scaling.maxReplicas", minimum=1),
        jobs_per_replica=_integer(
            raw.get("jobsPerReplica", 10), "spec.scaling.jobsPerReplica", minimum=1
        ),
        cooldown_seconds=_integer(
            raw.get("cooldownSeconds", 60), "spec.scaling.cooldownSeconds", minimum=0
        ),
    )
    if spec.min_replicas > spec.max_replicas:
        raise SpecError("spec.scaling.minReplicas must not be greater than maxReplicas")
    return spec


def _env(raw: object, index: int) -> EnvVar:
    item = _mapping(raw, f"spec.runner.env[{index}]")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise SpecError(f"spec.runner.env[{index}] needs a name")
    if name.startswith("SIGRUN_"):
        raise SpecError(f"spec.runner.env[{index}]: {name} is set by the operator")
    value_from = item.get("valueFrom")
    if value_from is not None:
        return EnvVar(name, value_from=_mapping(value_from, f"spec.runner.env[{index}].valueFrom"))
    return EnvVar(name, value=str(item.get("value", "")))


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(f"{where} must be an object")
    return value


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise SpecError(f"{where} must be a list of strings")
    if not all(isinstance(item, str) and item for item in value):
        raise SpecError(f"{where} must hold non-empty strings")
    return tuple(value)


def _integer(value: object, where: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where} must be an integer, got {value!r}")
    if value < minimum:
        raise SpecError(f"{where} must be at least {minimum}, got {value}")
    return value


def _boolean(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{where} must be true or false, got {value!r}")
    return value


def _number(value: object, where: str, *, minimum: float, exclusive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpecError(f"{where} must be a number, got {value!r}")
    if value < minimum or (exclusive and value == minimum):
        bound = "greater than" if exclusive else "at least"
        raise SpecError(f"{where} must be {bound} {minimum:g}, got {value}")
    return float(value)

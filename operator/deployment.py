"""The runner Deployment of a JobQueue, built from its spec.  Pure: spec in, manifest out.

Everything a runner pod needs is decided here, in one function that tests can
read as a table: the image and ``sigrun work``, the ``SIGRUN_*`` environment
the runner reads (see ``runner/cli.py``), the Redis password from a Secret
(never in the manifest itself), the pod's own name, UID and namespace through
the downward API (so a runner's identity in Redis names its pod), the
termination-message file the runner keeps its in-flight job ids in (so a
whole-container OOM kill still names its jobs), a grace period longer than the
runner's own (so it can requeue before SIGKILL), and a "restricted" security
context.

What it must not do: talk to the API, or set ``spec.replicas`` on its own
account — the autoscaler owns that number, the caller passes the current one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from sigrun.operator.spec import API_VERSION, KIND, JobQueueSpec, QueueRef

RUNNER_CONTAINER = "runner"
RUNNER_APP = "sigrun-runner"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_JOBQUEUE = "sigrun.dev/jobqueue"
SPEC_HASH = "sigrun.dev/spec-hash"
MANAGER = "sigrun-operator"
TERMINATION_LOG = "/dev/termination-log"
RUNNER_UID = 10001  # the Dockerfile's user; numeric so runAsNonRoot can be verified


def deployment_name(jobqueue: str) -> str:
    return f"{jobqueue}-runner"


def selector_labels(jobqueue: str) -> dict[str, str]:
    """What the Deployment selects and the operator's pod watch filters on (immutable)."""
    return {LABEL_NAME: RUNNER_APP, LABEL_JOBQUEUE: jobqueue}


def runner_labels(jobqueue: str) -> dict[str, str]:
    return {
        **selector_labels(jobqueue),
        LABEL_INSTANCE: jobqueue,
        LABEL_COMPONENT: "runner",
        LABEL_MANAGED_BY: MANAGER,
    }


def runner_env(spec: JobQueueSpec) -> list[dict[str, Any]]:
    """The runner's configuration, exactly the variables ``sigrun work`` reads."""
    runner = spec.runner
    env: list[dict[str, Any]] = [
        {"name": "SIGRUN_REDIS_URL", "value": spec.redis.url},
        {"name": "SIGRUN_PREFIX", "value": spec.redis.prefix},
        {"name": "SIGRUN_QUEUES", "value": ",".join(spec.queues)},
        {"name": "SIGRUN_CONCURRENCY", "value": str(runner.concurrency)},
        {"name": "SIGRUN_ALLOW_MODULES", "value": ",".join(runner.allowed_modules)},
        {"name": "SIGRUN_GRACE_SECONDS", "value": str(runner.grace_seconds)},
        {"name": "SIGRUN_BACKOFF_SECONDS", "value": f"{spec.retry.backoff_seconds:g}"},
        {"name": "SIGRUN_HEARTBEAT_TTL", "value": str(runner.heartbeat_ttl_seconds)},
        {"name": "SIGRUN_PRELOAD", "value": "1" if runner.preload else "0"},
        {"name": "SIGRUN_TERMINATION_LOG", "value": TERMINATION_LOG},
        {"name": "SIGRUN_LOG_FORMAT", "value": "json"},
        _field_env("SIGRUN_POD_NAME", "metadata.name"),
        _field_env("SIGRUN_POD_UID", "metadata.uid"),
        _field_env("SIGRUN_POD_NAMESPACE", "metadata.namespace"),
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if runner.timeout_seconds is not None:
        env.append({"name": "SIGRUN_JOB_TIMEOUT", "value": f"{runner.timeout_seconds:g}"})
    if spec.redis.password is not None:
        ref = spec.redis.password
        env.append(
            {
                "name": "SIGRUN_REDIS_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
            }
        )
    env.extend(var.manifest() for var in runner.env)
    return env


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def pod_spec(spec: JobQueueSpec, *, image: str) -> dict[str, Any]:
    runner = spec.runner
    container: dict[str, Any] = {
        "name": RUNNER_CONTAINER,
        "image": image,
        "command": ["sigrun", "work"],
        "env": runner_env(spec),
        "resources": {kind: dict(values) for kind, values in runner.resources.items()},
        # The runner rewrites this file on every job start and end; the kubelet copies it
        # into lastState.terminated.message whatever killed the container.
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if runner.image_pull_policy:
        container["imagePullPolicy"] = runner.image_pull_policy
    pod: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": runner.pod_grace_seconds,
        # The runner never calls the Kubernetes API: the operator reports for it.
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNNER_UID,
            "runAsGroup": RUNNER_UID,
            "fsGroup": RUNNER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # A read-only root needs somewhere to write: job scratch space, Python's temp files.
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    if runner.service_account_name:
        pod["serviceAccountName"] = runner.service_account_name
    if runner.node_selector:
        pod["nodeSelector"] = dict(runner.node_selector)
    return pod


def runner_deployment(
    ref: QueueRef, spec: JobQueueSpec, *, image: str, replicas: int
) -> dict[str, Any]:
    """The whole Deployment, owned by the JobQueue (garbage-collected with it)."""
    labels = runner_labels(ref.name)
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(ref.name),
            "namespace": ref.namespace,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": ref.name,
                    "uid": ref.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "selector": {"matchLabels": selector_labels(ref.name)},
            "strategy": {
                "type": "RollingUpdate",
                # Old runners drain (SIGTERM, finish, requeue) while new ones start.
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": pod_spec(spec, image=image),
            },
        },
    }
    body["metadata"]["annotations"] = {SPEC_HASH: spec_hash(body)}
    body["spec"]["replicas"] = replicas
    return body


def spec_hash(body: Mapping[str, Any]) -> str:
    """A fingerprint of what the operator sets, so an unchanged spec costs no write."""
    stable = {k: v for k, v in body.items() if k != "status"}
    meta = dict(stable.get("metadata", {}))
    meta.pop("annotations", None)
    stable["metadata"] = meta
    spec = dict(stable.get("spec", {}))
    spec.pop("replicas", None)
    stable["spec"] = spec
    digest = hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()
    return digest[:16]

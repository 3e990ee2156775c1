"""Make a JobQueue's runners exist, and say plainly when they cannot.

One pass: parse the spec, pick the image, read the Redis password Secret,
server-side-apply the runner Deployment (owned by the JobQueue, so the garbage
collector removes it with it), connect to Redis.  Each step that fails becomes
a :class:`Problem` with a CamelCase reason and a message a person can act on
(``SecretNotFound: Secret redis-auth not found in namespace team-a ...``); the
caller turns it into ``Ready=False`` and a Warning Event, and tries again on
the next tick — a spec that cannot work never crash-loops the operator.

The Deployment is applied when its fingerprint changed (a spec change rolls
the pods), when its ``generation`` is not the one the operator last wrote (a
hand edit, undone), and at least every :data:`REAPPLY_SECONDS`.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.exceptions

from sigrun.operator.deployment import MANAGER, SPEC_HASH, deployment_name, runner_deployment
from sigrun.operator.kube import Body, Kube, KubeError
from sigrun.operator.spec import JobQueueSpec, QueueRef, SpecError, parse_spec
from sigrun.operator.state import QueueRuntime
from sigrun.runner.protocol import Store
from sigrun.runner.redisio import CONNECTION_ERRORS, redact

#: redis-py's AuthenticationError is a ConnectionError: tell it apart first.
AUTH_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.AuthenticationError,
    redis.exceptions.AuthorizationError,
    redis.exceptions.NoPermissionError,
)

log = logging.getLogger(__name__)

REAPPLY_SECONDS = 300.0


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str


@dataclass
class Reconciled:
    """What one pass established; ``problem`` is the first thing that stopped it."""

    spec: JobQueueSpec | None = None
    deployment: Body | None = None
    store: Store | None = None
    problem: Problem | None = None


def deployment_path(ref: QueueRef) -> str:
    return f"/apis/apps/v1/namespaces/{ref.namespace}/deployments/{deployment_name(ref.name)}"


async def reconcile(
    kube: Kube,
    rt: QueueRuntime,
    raw_spec: Mapping[str, Any],
    *,
    default_image: str,
    now: float,
) -> Reconciled:
    done = Reconciled()
    try:
        done.spec = spec = parse_spec(raw_spec)
    except SpecError as e:
        done.problem = Problem("InvalidSpec", str(e))
        return done
    ref = rt.ref

    password: str | None = None
    if spec.redis.password is not None:
        password, problem = await read_password(kube, ref.namespace, spec)
        if problem is not None:
            done.problem = problem

    image = spec.runner.image or default_image
    if not image:
        done.problem = done.problem or Problem(
            "ImageMissing",
            "spec.runner.image is empty and the operator has no default runner image "
            "(install it with the chart, or set --runner-image / SIGRUN_RUNNER_IMAGE)",
        )
    else:
        try:
            done.deployment = await apply_deployment(kube, rt, spec, image=image, now=now)
        except KubeError as e:
            done.problem = done.problem or Problem("DeploymentFailed", str(e))

    if done.problem is not None and done.problem.reason in ("SecretNotFound", "SecretKeyMissing"):
        return done  # without the password Redis would only say "auth failed"
    url = operator_url(spec.redis.url, ref.namespace)
    store = rt.connect(url, password, spec.redis.prefix)
    try:
        await store.redis.ping()
    except AUTH_ERRORS as e:
        done.problem = done.problem or Problem(
            "RedisAuthFailed", f"Redis at {redact(url)} refused the credentials: {e}"
        )
        return done
    except CONNECTION_ERRORS as e:
        done.problem = done.problem or Problem(
            "RedisUnreachable", f"cannot reach Redis at {redact(url)}: {e}"
        )
        return done
    except Exception as e:  # auth failures and the like: redis-py's own error tree
        done.problem = done.problem or Problem(
            "RedisError", f"Redis at {redact(url)} refused the operator: {e}"
        )
        return done
    done.store = store
    return done


async def read_password(
    kube: Kube, namespace: str, spec: JobQueueSpec
) -> tuple[str | None, Problem | None]:
    ref = spec.redis.password
    assert ref is not None
    where = f"Secret {ref.name} in namespace {namespace}"
    try:
        secret = await kube.get(f"/api/v1/namespaces/{namespace}/secrets/{ref.name}")
    except KubeError as e:
        return None, Problem("SecretUnreadable", f"cannot read {where}: {e}")
    if secret is None:
        return None, Problem(
            "SecretNotFound",
            f"{where} not found (spec.redis.passwordSecretRef): runner pods cannot start and "
            "the operator cannot read the queue until it exists",
        )
    raw = (secret.get("data") or {}).get(ref.key)
    if raw is None:
        return None, Problem(
            "SecretKeyMissing", f"{where} has no key {ref.key!r} (spec.redis.passwordSecretRef.key)"
        )
    try:
        return base64.b64decode(raw).decode(), None
    except (binascii.Error, UnicodeDecodeError) as e:
        return None, Problem("SecretUnreadable", f"{where} key {ref.key!r} is not text: {e}")


async def apply_deployment(
    kube: Kube, rt: QueueRuntime, spec: JobQueueSpec, *, image: str, now: float
) -> Body:
    path = deployment_path(rt.ref)
    existing = await kube.get(path)
    replicas = spec.scaling.min_replicas
    if existing is not None:
        replicas = int((existing.get("spec") or {}).get("replicas") or 0)
    wanted = runner_deployment(rt.ref, spec, image=image, replicas=replicas)
    fingerprint = wanted["metadata"]["annotations"][SPEC_HASH]
    current = ((existing or {}).get("metadata") or {}).get("annotations") or {}
    if existing is not None and current.get(SPEC_HASH) == fingerprint:
        # Our fingerprint is there; a generation we did not write means a hand edit.
        generation = (existing.get("metadata") or {}).get("generation")
        if generation == rt.deployment_generation and now - rt.applied_at < REAPPLY_SECONDS:
            return existing
    applied = await kube.apply(path, wanted, manager=MANAGER)
    rt.deployment_generation = (applied.get("metadata") or {}).get("generation")
    if existing is None or current.get(SPEC_HASH) != fingerprint:
        log.info(
            "deployment %s/%s %s (spec %s)",
            rt.ref.namespace,
            deployment_name(rt.ref.name),
            "created" if existing is None else "updated",
            fingerprint,
            extra={"object": str(rt.ref)},
        )
    rt.applied_at = now
    return applied


def operator_url(url: str, namespace: str) -> str:
    """The Redis URL as seen from the operator's pod, which may live in another namespace.

    The URL in the spec is written for the runner pods, where a bare host name
    (``redis``) is a Service of their own namespace; the operator qualifies it.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host or "." in host or ":" in host or host == "localhost" or parts.scheme == "unix":
        return url
    userinfo, at, hostport = parts.netloc.rpartition("@")
    hostport = hostport.replace(host, f"{host}.{namespace}.svc", 1)
    return urlunsplit(parts._replace(netloc=userinfo + at + hostport))

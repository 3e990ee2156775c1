"""What the operator remembers between ticks and events, per process.

Nothing here is the record of truth (Redis and ``.status`` are): it is the
working memory that makes ticks cheap and idempotent — one Redis connection
per JobQueue, the autoscaler's two timestamps, the history cursor and the last
status written, the deaths still waiting for a runner's heartbeat to expire,
and which pod deaths were already handled.  A restarted operator rebuilds it
from ``.status`` and the pods' current state.

A per-JobQueue ``asyncio.Lock`` serialises the kopf timer, the spec-change
handlers and the pod-event handler for that JobQueue.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sigrun.operator.deaths import Death
from sigrun.operator.scaling import ScaleMemory
from sigrun.operator.spec import JobQueueSpec, QueueRef
from sigrun.runner.keys import Keys
from sigrun.runner.protocol import Store
from sigrun.runner.redisio import AsyncRedis, connect_async

log = logging.getLogger(__name__)

#: How long a death waits for its runner's heartbeat to expire before the reaper is left to it.
DEATH_PATIENCE_SECONDS = 600.0
_SEEN_DEATHS = 10_000
_PARKED_PER_JOBQUEUE = 1_000


@dataclass
class PendingDeath:
    death: Death
    first_seen: float


@dataclass
class QueueRuntime:
    """The operator's working memory about one JobQueue."""

    ref: QueueRef
    created_at: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    store: Store | None = None
    spec: JobQueueSpec | None = None  # as last reconciled
    scale: ScaleMemory = field(default_factory=ScaleMemory)
    cursor: dict[str, str] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)  # as last written (or read at start)
    status_written_at: float = 0.0
    applied_at: float = 0.0
    deployment_generation: int | None = None  # of the Deployment as the operator last wrote it
    deaths: list[PendingDeath] = field(default_factory=list)
    _redis: AsyncRedis | None = None
    _redis_key: str = ""

    def connect(self, url: str, password: str | None, prefix: str) -> Store:
        """The Store for this spec; a new connection only when URL, password or prefix change."""
        key = hashlib.sha256(f"{url}\0{password or ''}\0{prefix}".encode()).hexdigest()
        if self.store is None or key != self._redis_key:
            self.close()
            self._redis = connect_async(url, password=password, max_connections=8)
            self._redis_key = key
            self.store = Store(self._redis, Keys(prefix))
        return self.store

    def close(self) -> None:
        redis, self._redis, self.store = self._redis, None, None
        if redis is not None:
            task = asyncio.get_running_loop().create_task(redis.aclose())
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)


class Fleet:
    """Every JobQueue this operator process handles, and the runner pods it has seen."""

    def __init__(self) -> None:
        self._queues: dict[str, QueueRuntime] = {}  # by JobQueue uid
        self._names: dict[tuple[str, str], str] = {}  # (namespace, name) -> uid
        self._orphans: dict[tuple[str, str], list[PendingDeath]] = {}
        self._restarts: dict[str, int] = {}  # pod uid -> runner restartCount last seen
        self._seen: OrderedDict[str, None] = OrderedDict()

    def runtime(
        self, ref: QueueRef, *, created_at: float, status: Mapping[str, Any]
    ) -> QueueRuntime:
        """The runtime of a JobQueue, made on first sight from its stored status."""
        found = self._queues.get(ref.uid)
        if found is not None:
            return found
        old_uid = self._names.get((ref.namespace, ref.name))
        if old_uid is not None and old_uid != ref.uid:
            self.drop(old_uid)  # deleted and created again under the same name
        rt = QueueRuntime(ref=ref, created_at=created_at)
        rt.status = dict(status)
        rt.cursor = dict(status.get("historyCursor") or {})
        rt.deaths = self._orphans.pop((ref.namespace, ref.name), [])
        self._queues[ref.uid] = rt
        self._names[(ref.namespace, ref.name)] = ref.uid
        return rt

    def find(self, namespace: str, name: str) -> QueueRuntime | None:
        uid = self._names.get((namespace, name))
        return self._queues.get(uid) if uid else None

    def drop(self, uid: str) -> None:
        rt = self._queues.pop(uid, None)
        if rt is not None:
            self._names.pop((rt.ref.namespace, rt.ref.name), None)
            rt.close()

    def park(self, namespace: str, jobqueue: str, death: PendingDeath) -> None:
        """A death of a JobQueue not seen yet (operator starting): handled on its first tick."""
        parked = self._orphans.setdefault((namespace, jobqueue), [])
        if len(parked) < _PARKED_PER_JOBQUEUE:  # pods of a JobQueue that never shows up
            parked.append(death)

    # -- pods --

    def previous_restarts(self, pod_uid: str) -> int | None:
        return self._restarts.get(pod_uid)

    def observe_pod(self, pod_uid: str, restarts: int | None, *, gone: bool) -> None:
        if gone:
            self._restarts.pop(pod_uid, None)
        elif restarts is not None:
            self._restarts[pod_uid] = restarts

    def first_time(self, death: Death) -> bool:
        """True once per death, however many watch events show it."""
        if death.key in self._seen:
            return False
        self._seen[death.key] = None
        while len(self._seen) > _SEEN_DEATHS:
            self._seen.popitem(last=False)
        return True

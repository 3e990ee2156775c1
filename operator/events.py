"""Kubernetes Events on a JobQueue: counted, not flooded; idempotent across restarts.

kopf posts each event as one new object and the Python client has none of
client-go's aggregation, so a burst of OOM kills would bury ``kubectl describe``.
This module does what client-go's EventCorrelator does, simply:

* one core/v1 Event object per *kind of thing* — (type, reason, key), where the
  key is e.g. queue + function + cause for a DirtyExit — with a name derived
  from the JobQueue's UID and that key;
* a repeat within the window (10 minutes) patches that Event: ``count`` + n,
  ``lastTimestamp``, the newest ``message``; after the window the series starts
  again at 1 (events expire from the API server after about an hour anyway);
* an Event built from history records carries the last record's stream id in an
  annotation, so a restarted operator that reads the same records again does
  not count them twice.

``involvedObject`` carries the JobQueue's UID, kind and namespace, which is
what ``kubectl describe jobqueue`` selects on; ``source.component`` and
``reportingComponent`` are ``sigrun-operator``.  Rate limiting is the caller's:
the monitor writes at most a few Events per JobQueue per tick.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass

from sigrun.operator.kube import Body, Kube, KubeError
from sigrun.operator.spec import API_VERSION, KIND, QueueRef

log = logging.getLogger(__name__)

COMPONENT = "sigrun-operator"
STREAM_ID = "sigrun.dev/stream-id"
WINDOW_SECONDS = 600.0
MESSAGE_LIMIT = 1024  # what events.k8s.io/v1 accepts; kubectl shows it on one line


@dataclass(frozen=True)
class EventSpec:
    type: str  # Normal | Warning
    reason: str  # CamelCase, fixed: DirtyExit, Scaled, SecretNotFound ...
    message: str
    key: str = ""  # what makes two events "the same kind of thing" beyond type and reason
    count: int = 1  # occurrences this post stands for (records aggregated in one tick)
    stream_id: str | None = None  # newest history record this post accounts for


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """Redis stream ids compare as (milliseconds, sequence)."""
    ms, _, seq = stream_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0


def event_name(ref: QueueRef, spec: EventSpec) -> str:
    digest = hashlib.sha1(f"{ref.uid}|{spec.type}|{spec.reason}|{spec.key}".encode()).hexdigest()
    return f"{ref.name[:200]}.{digest[:16]}"


def timestamp(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(raw: object) -> float | None:
    if not isinstance(raw, str):
        return None
    try:
        return dt.datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class EventRecorder:
    """Posts and counts Events; one per operator process."""

    def __init__(self, kube: Kube, *, instance: str, window: float = WINDOW_SECONDS) -> None:
        self.kube = kube
        self.instance = instance
        self.window = window

    async def post(self, ref: QueueRef, spec: EventSpec, *, now: float) -> bool:
        """Create or count the Event; False when it was already counted (or the API refused)."""
        name = event_name(ref, spec)
        path = f"/api/v1/namespaces/{ref.namespace}/events"
        try:
            existing = await self.kube.get(f"{path}/{name}")
            if existing is None:
                try:
                    await self.kube.create(path, self._new(ref, spec, name, now))
                    return True
                except KubeError as e:
                    if not e.conflict:
                        raise
                    existing = await self.kube.get(f"{path}/{name}")
                    if existing is None:
                        return False
            return await self._count(path, name, existing, spec, now)
        except KubeError as e:
            # Events are a view; Redis and .status keep the record.  Never fail a tick on one.
            log.warning("event %s %s on %s not posted: %s", spec.type, spec.reason, ref, e)
            return False

    async def _count(
        self, path: str, name: str, existing: Body, spec: EventSpec, now: float
    ) -> bool:
        annotations = (existing.get("metadata") or {}).get("annotations") or {}
        seen = annotations.get(STREAM_ID)
        if spec.stream_id and seen and stream_id_key(seen) >= stream_id_key(spec.stream_id):
            return False  # a restarted operator re-reading records it already counted
        last = _seconds(existing.get("lastTimestamp")) or 0.0
        fresh = now - last > self.window
        count = spec.count if fresh else int(existing.get("count") or 1) + spec.count
        patch: Body = {
            "count": count,
            "lastTimestamp": timestamp(now),
            "message": spec.message[:MESSAGE_LIMIT],
            "reportingInstance": self.instance,
        }
        if fresh:
            patch["firstTimestamp"] = timestamp(now)
        if spec.stream_id:
            patch["metadata"] = {"annotations": {STREAM_ID: spec.stream_id}}
        try:
            await self.kube.merge_patch(f"{path}/{name}", patch)
        except KubeError as e:
            if not e.not_found:
                raise
            return await self.post_new(path, name, existing, spec, now)
        return True

    async def post_new(
        self, path: str, name: str, existing: Body, spec: EventSpec, now: float
    ) -> bool:
        """The Event expired between our read and our patch: start it again."""
        involved = existing.get("involvedObject") or {}
        ref = QueueRef(
            namespace=str(involved.get("namespace", "")),
            name=str(involved.get("name", "")),
            uid=str(involved.get("uid", "")),
        )
        await self.kube.create(path, self._new(ref, spec, name, now))
        return True

    def _new(self, ref: QueueRef, spec: EventSpec, name: str, now: float) -> Body:
        annotations = {STREAM_ID: spec.stream_id} if spec.stream_id else {}
        stamp = timestamp(now)
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ref.namespace, "annotations": annotations},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": ref.uid,
            },
            "type": spec.type,
            "reason": spec.reason,
            "message": spec.message[:MESSAGE_LIMIT],
            "count": spec.count,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance,
            "action": spec.reason,
        }

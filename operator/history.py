"""Reading each queue's history stream from where the operator left off.

Every failed or dirty attempt is XADDed to ``sigrun:{q}:history`` by whoever
recorded it: the runner (a child OOM-killed while the runner survived, a
timeout, a crash) or the operator itself (a runner that died with its jobs).
The operator turns the dirty ones into Events; this module only reads.

The cursor is the id of the last entry already handled, per queue, kept in
the JobQueue's ``.status.historyCursor`` so a restarted operator continues
instead of starting over.  A JobQueue seen for the first time starts at its
own creation time: older records belong to whoever ran the queue before.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, cast

from sigrun.operator.events import EventSpec, stream_id_key
from sigrun.runner.errors import PayloadError
from sigrun.runner.jobs import Outcome, Record
from sigrun.runner.keys import Keys
from sigrun.runner.redisio import AsyncRedis

log = logging.getLogger(__name__)

#: Entries read per queue per call; more wait for the next tick.
BATCH = 500


class StreamReader(Protocol):
    """The one stream call the operator makes (``decode_responses=True`` client)."""

    async def xrange(
        self, name: str, min: str = "-", max: str = "+", count: int | None = None
    ) -> list[tuple[str, dict[str, str]]]: ...


@dataclass(frozen=True)
class Entry:
    queue: str
    stream_id: str
    record: Record

    @property
    def dirty(self) -> bool:
        return self.record.outcome is Outcome.DIRTY


def initial_cursor(created_at: float) -> str:
    """Skip what was written before the JobQueue existed."""
    return f"{int(created_at * 1000)}-0"


async def read_after(
    redis: AsyncRedis,
    keys: Keys,
    queues: Iterable[str],
    cursor: Mapping[str, str],
    *,
    default: str,
    batch: int = BATCH,
) -> tuple[list[Entry], dict[str, str]]:
    """New entries of every queue, oldest first per queue, and the advanced cursor."""
    reader = cast(StreamReader, redis)
    entries: list[Entry] = []
    advanced = dict(cursor)
    for queue in queues:
        start = cursor.get(queue, default)
        raw = await reader.xrange(keys.queue(queue).history, min=f"({start}", count=batch)
        for stream_id, fields in raw:
            advanced[queue] = stream_id
            try:
                record = Record.from_json(fields.get("record", ""))
            except (ValueError, TypeError, KeyError, PayloadError) as e:
                log.warning("history entry %s of queue %s unreadable: %s", stream_id, queue, e)
                continue
            entries.append(Entry(queue, stream_id, record))
    return entries, advanced


def dirty_exit_events(entries: Iterable[Entry], *, limit: int) -> tuple[list[EventSpec], int]:
    """One Event per (queue, func, cause) with the count of its records.

    Returns the events and how many entries they cover: at most ``limit``
    distinct events per call, so a flood of different failures is spread over
    ticks rather than dropped (the cursor stops before the first entry left out).
    """
    grouped: dict[str, list[Entry]] = {}
    covered = 0
    for entry in entries:
        if entry.dirty:
            key = _key(entry)
            if key not in grouped and len(grouped) >= limit:
                break
            grouped.setdefault(key, []).append(entry)
        covered += 1
    events = []
    for key, group in grouped.items():
        newest = max(group, key=lambda e: stream_id_key(e.stream_id))
        # The message of the newest record that is not collateral: after a group OOM kill,
        # the culprit's record names the others, theirs only point back at it.
        telling = max(group, key=lambda e: (not e.record.collateral, stream_id_key(e.stream_id)))
        events.append(
            EventSpec(
                type="Warning",
                reason="DirtyExit",
                message=dirty_exit_message(telling.record),
                key=key,
                count=len(group),
                stream_id=newest.stream_id,
            )
        )
    return events, covered


def _key(entry: Entry) -> str:
    record = entry.record
    return f"{entry.queue}|{record.func}|{record.cause or ''}"


def dirty_exit_message(record: Record) -> str:
    """``job 3f2a (jobs.imports:load) OOMKilled: <the record's message>``."""
    cause = record.cause.value if record.cause else "DirtyExit"
    collateral = " (collateral)" if record.collateral else ""
    return f"job {record.job_id} ({record.func}) {cause}{collateral}: {record.message}"


def cursor_through(
    entries: list[Entry], covered: int, before: Mapping[str, str], after: Mapping[str, str]
) -> dict[str, str]:
    """The cursor after handling the first ``covered`` entries (all of them: ``after``)."""
    if covered >= len(entries):
        return dict(after)
    cursor = dict(before)
    for entry in entries[:covered]:
        cursor[entry.queue] = entry.stream_id
    # A queue whose entries were all left out keeps its old position; one partly handled
    # stops at its last handled entry.  Unreadable entries before that are skipped for good.
    return cursor

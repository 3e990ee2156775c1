"""The operator's pure helpers for reporting: Event grouping, history cursors, status writes,
the Redis URL as the operator sees it, and the CRD's defaults agreeing with the code's.

No cluster, no Redis: tables.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from sigrun.operator.events import EventSpec, event_name, stream_id_key
from sigrun.operator.history import Entry, cursor_through, dirty_exit_events, initial_cursor
from sigrun.operator.lost import likely_culprit
from sigrun.operator.reconcile import operator_url
from sigrun.operator.spec import QueueRef, parse_spec
from sigrun.operator.status import Condition, conditions, needs_write
from sigrun.runner.jobs import Cause, Outcome, Record
from tests.operator.support import CRD_FILE


def record(job: str, func: str = "jobs.a:f", cause: Cause = Cause.OOM_KILLED, **kw: Any) -> Record:
    return Record(
        job_id=job,
        queue="q",
        func=func,
        args=(),
        kwargs={},
        attempt=1,
        outcome=kw.pop("outcome", Outcome.DIRTY),
        cause=cause,
        message=f"{cause} of {job}",
        failed_at=kw.pop("at", 1.0),
        **kw,
    )


def entry(stream_id: str, rec: Record, queue: str = "q") -> Entry:
    return Entry(queue, stream_id, rec)


def test_dirty_records_of_one_kind_become_one_counted_event_with_the_newest_message() -> None:
    entries = [entry("1-0", record("a")), entry("2-0", record("b")), entry("3-0", record("c"))]
    [event], covered = dirty_exit_events(entries, limit=10)
    assert covered == 3
    assert (event.type, event.reason, event.count, event.stream_id) == (
        "Warning",
        "DirtyExit",
        3,
        "3-0",
    )
    assert event.message == "job c (jobs.a:f) OOMKilled: OOMKilled of c"


def test_failures_are_not_dirty_exits_and_causes_and_functions_are_kept_apart() -> None:
    entries = [
        entry("1-0", record("a")),
        entry("2-0", record("b", cause=Cause.EXCEPTION, outcome=Outcome.FAILED)),
        entry("3-0", record("c", cause=Cause.SIGNAL)),
        entry("4-0", record("d", func="jobs.b:g")),
    ]
    events, covered = dirty_exit_events(entries, limit=10)
    assert covered == 4
    assert sorted((e.key, e.count) for e in events) == [
        ("q|jobs.a:f|OOMKilled", 1),
        ("q|jobs.a:f|Signal", 1),
        ("q|jobs.b:g|OOMKilled", 1),
    ]


def test_a_flood_of_distinct_events_is_spread_over_passes_not_dropped() -> None:
    entries = [entry(f"{i}-0", record(f"j{i}", func=f"jobs.m:f{i}")) for i in range(1, 6)]
    events, covered = dirty_exit_events(entries, limit=2)
    assert (len(events), covered) == (2, 2)
    cursor = cursor_through(entries, covered, {"q": "0-0"}, {"q": "5-0"})
    assert cursor == {"q": "2-0"}  # the next pass starts at the third record


def test_collateral_records_say_so() -> None:
    [event], _ = dirty_exit_events([entry("1-0", record("a", collateral=True))], limit=5)
    assert "OOMKilled (collateral)" in event.message


@pytest.mark.parametrize(
    ("a", "b"),
    [("1-0", "2-0"), ("1-1", "1-2"), ("9-0", "10-0"), ("1712345678901-0", "1712345678901-1")],
)
def test_stream_ids_compare_as_numbers_not_text(a: str, b: str) -> None:
    assert stream_id_key(a) < stream_id_key(b)


def test_a_new_jobqueue_starts_reading_history_at_its_creation() -> None:
    assert initial_cursor(1700000000.5) == "1700000000500-0"


def test_event_names_are_stable_per_jobqueue_and_kind_of_thing() -> None:
    ref = QueueRef("ns", "imports", "uid-1")
    a = EventSpec("Warning", "DirtyExit", "one", key="q|f|OOMKilled")
    b = EventSpec("Warning", "DirtyExit", "two", key="q|f|OOMKilled", count=4)
    c = EventSpec("Warning", "DirtyExit", "one", key="q|f|Evicted")
    assert event_name(ref, a) == event_name(ref, b) != event_name(ref, c)
    assert event_name(ref, a) != event_name(QueueRef("ns", "imports", "uid-2"), a)
    assert event_name(ref, a).startswith("imports.")


def test_condition_transition_time_changes_only_with_its_status() -> None:
    first = conditions(
        [], [Condition("Ready", False, "SecretNotFound", "m")], generation=1, now=100
    )
    same = conditions(
        first, [Condition("Ready", False, "RedisUnreachable", "m2")], generation=2, now=200
    )
    flipped = conditions(
        same, [Condition("Ready", True, "Reconciled", "ok")], generation=2, now=300
    )
    assert first[0]["lastTransitionTime"] == same[0]["lastTransitionTime"] == "1970-01-01T00:01:40Z"
    assert flipped[0]["lastTransitionTime"] == "1970-01-01T00:05:00Z"
    assert flipped[0]["observedGeneration"] == 2


@pytest.mark.parametrize(
    ("old", "new", "since", "write"),
    [
        ({"pending": 1}, {"pending": 1}, 100, False),
        ({"pending": 1}, {"pending": 2}, 1, False),  # counters wait a few seconds
        ({"pending": 1}, {"pending": 2}, 6, True),
        ({"replicas": {"desired": 1}}, {"replicas": {"desired": 2}}, 0, True),  # others at once
        ({"conditions": []}, {"conditions": [{"type": "Ready"}]}, 0, True),
    ],
)
def test_status_counters_are_written_every_few_seconds_everything_else_at_once(
    old: dict[str, Any], new: dict[str, Any], since: float, write: bool
) -> None:
    assert needs_write(old, new, since_last=since) is write


@pytest.mark.parametrize(
    ("url", "seen"),
    [
        ("redis://redis:6379/0", "redis://redis.team-a.svc:6379/0"),
        ("redis://user@redis:6379/0", "redis://user@redis.team-a.svc:6379/0"),
        ("redis://redis/0", "redis://redis.team-a.svc/0"),
        ("redis://redis.other.svc:6379/0", "redis://redis.other.svc:6379/0"),
        ("redis://10.0.0.7:6379/0", "redis://10.0.0.7:6379/0"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("rediss://[::1]:6379/0", "rediss://[::1]:6379/0"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_a_bare_redis_host_is_the_jobqueues_namespace_service(url: str, seen: str) -> None:
    assert operator_url(url, "team-a") == seen


@pytest.mark.parametrize(
    ("jobs", "rss", "culprit"),
    [
        (["a"], {}, "a"),
        (["a", "b", "c"], {"a": 10, "b": 300, "c": 20}, "b"),
        (["a", "b"], {}, None),
        (["a", "b"], {"b": 5}, "b"),
    ],
)
def test_the_likely_culprit_of_a_group_oom_is_the_biggest_child(
    jobs: list[str], rss: dict[str, int], culprit: str | None
) -> None:
    assert likely_culprit(jobs, rss) == culprit


def _defaults(schema: dict[str, Any]) -> dict[str, Any]:
    found = {}
    for name, prop in (schema.get("properties") or {}).items():
        if "default" in prop and prop.get("type") != "object":
            found[name] = prop["default"]
    return found


def test_the_crd_defaults_are_the_defaults_the_operator_assumes() -> None:
    crd = yaml.safe_load(CRD_FILE.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    parsed = parse_spec(
        {"queues": ["q"], "redis": {"url": "redis://r"}, "runner": {"allowedModules": ["j."]}}
    )
    runner = _defaults(spec["properties"]["runner"])
    assert runner == {
        "concurrency": parsed.runner.concurrency,
        "graceSeconds": parsed.runner.grace_seconds,
        "heartbeatTTLSeconds": parsed.runner.heartbeat_ttl_seconds,
        "preload": parsed.runner.preload,
    }
    scaling = spec["properties"]["scaling"]
    assert (
        _defaults(scaling)
        == scaling["default"]
        == {
            "minReplicas": parsed.scaling.min_replicas,
            "maxReplicas": parsed.scaling.max_replicas,
            "jobsPerReplica": parsed.scaling.jobs_per_replica,
            "cooldownSeconds": parsed.scaling.cooldown_seconds,
        }
    )
    assert _defaults(spec["properties"]["retry"]) == {
        "backoffSeconds": parsed.retry.backoff_seconds
    }
    assert _defaults(spec["properties"]["redis"]) == {"prefix": parsed.redis.prefix}


def test_the_crd_is_structural_and_rejects_unknown_fields_at_every_level() -> None:
    crd = yaml.safe_load(CRD_FILE.read_text())
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def walk(node: dict[str, Any], path: str) -> list[str]:
        bad = []
        if node.get("x-kubernetes-preserve-unknown-fields") and path != "status.kopf":
            bad.append(path)
        for name, child in (node.get("properties") or {}).items():
            bad += walk(child, f"{path}.{name}".lstrip("."))
        if isinstance(node.get("items"), dict):
            bad += walk(node["items"], f"{path}[]")
        return bad

    assert walk(root, "") == []


def test_a_group_oom_event_shows_the_culprits_record_which_names_the_others() -> None:
    entries = [
        entry("1-0", record("culprit")),
        entry("1-1", record("other1", collateral=True)),
        entry("1-2", record("other2", collateral=True)),
    ]
    [event], _ = dirty_exit_events(entries, limit=10)
    assert (event.count, event.stream_id) == (3, "1-2")
    assert event.message.startswith("job culprit ")

"""Jobs, how they end, and the records kept about them: frozen values, JSON in and out.

This module owns the shapes that cross process and network boundaries: the job
payload that sits in Redis, the report a child sends its parent, and the record
written when a job fails or dies.  Only JSON is ever used, never pickle: a
payload in Redis must not be able to run code just by being read.

It does no I/O and imports nothing of sigrun but the error tree.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias

from sigrun.runner.errors import PayloadError

JSON: TypeAlias = "bool | int | float | str | list[JSON] | dict[str, JSON] | None"


class State(StrEnum):
    """Where a job is in its life; stored in the job hash."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"  # waiting in the delayed set for its next attempt
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DIRTY = "dirty"  # gave up after its last attempt died from a signal

    @property
    def is_final(self) -> bool:
        return self in (State.SUCCEEDED, State.FAILED, State.DIRTY)


class Outcome(StrEnum):
    """How one attempt ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the job said so: an exception, or a non-zero exit
    DIRTY = "dirty"  # the job never got to say anything: a signal, or its runner vanished


class Cause(StrEnum):
    """Why an attempt did not succeed. CamelCase: these become Event messages."""

    EXCEPTION = "Exception"
    EXIT_CODE = "ExitCode"
    OOM_KILLED = "OOMKilled"
    TIMEOUT = "Timeout"
    SHUTDOWN = "Shutdown"
    CRASH = "Crash"
    SIGNAL = "Signal"
    # The runner itself vanished with the job; seen by a reaper or the operator.
    RUNNER_LOST = "RunnerLost"
    EVICTED = "Evicted"
    PREEMPTED = "Preempted"
    NODE_LOST = "NodeLost"
    DELETED = "Deleted"
    # The job could not even start.
    BAD_PAYLOAD = "BadPayload"
    FUNCTION_NOT_FOUND = "FunctionNotFound"
    FUNCTION_NOT_ALLOWED = "FunctionNotAllowed"
    BAD_ARGUMENTS = "BadArguments"

    @property
    def is_retryable(self) -> bool:
        """A job that cannot start will not start next time either."""
        return self not in _NOT_RETRYABLE


_NOT_RETRYABLE = frozenset(
    {Cause.BAD_PAYLOAD, Cause.FUNCTION_NOT_FOUND, Cause.FUNCTION_NOT_ALLOWED, Cause.BAD_ARGUMENTS}
)


def new_job_id() -> str:
    # uuid is imported here, not at the top: the fork server imports this module but
    # never makes an id, and every module it loads is memory its spare child shares.
    import uuid  # noqa: PLC0415

    return uuid.uuid4().hex


@dataclass(frozen=True)
class Job:
    """One unit of work, exactly as it travels through Redis.

    ``attempt`` counts from 1.  ``dirty_streak`` counts the dirty exits in a
    row that led here, so a job that is OOM-killed on every attempt ends with
    "gave up after N dirty exits" instead of looping forever.
    """

    id: str
    queue: str
    func: str
    args: tuple[JSON, ...] = ()
    kwargs: Mapping[str, JSON] = field(default_factory=dict)
    attempt: int = 1
    max_attempts: int = 3
    timeout: float | None = None
    enqueued_at: float = 0.0
    dirty_streak: int = 0
    dirty_causes: tuple[str, ...] = ()

    def to_json(self) -> str:
        body: dict[str, Any] = {
            "id": self.id,
            "queue": self.queue,
            "func": self.func,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "timeout": self.timeout,
            "enqueued_at": self.enqueued_at,
        }
        if self.dirty_streak:
            body["dirty_streak"] = self.dirty_streak
            body["dirty_causes"] = list(self.dirty_causes)
        return json.dumps(body, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, raw: str | bytes, *, queue: str) -> Job:
        """Parse a payload; raise :class:`PayloadError` saying exactly what is wrong."""
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise PayloadError(f"payload is not JSON: {e}") from e
        if not isinstance(body, dict):
            raise PayloadError(f"payload is a JSON {type(body).__name__}, not an object")
        job_id = body.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise PayloadError("payload has no 'id'")
        func = body.get("func")
        if not isinstance(func, str) or ":" not in func:
            raise PayloadError(
                f"payload has no 'func' of the form 'package.module:function': {func!r}"
            )
        args = body.get("args", [])
        kwargs = body.get("kwargs", {})
        if not isinstance(args, list):
            raise PayloadError("payload 'args' is not a list")
        if not isinstance(kwargs, dict):
            raise PayloadError("payload 'kwargs' is not an object")
        try:
            return cls(
                id=job_id,
                queue=str(body.get("queue", queue)),
                func=func,
                args=tuple(args),
                kwargs=kwargs,
                attempt=int(body.get("attempt", 1)),
                max_attempts=int(body.get("max_attempts", 3)),
                timeout=_optional_float(body.get("timeout")),
                enqueued_at=float(body.get("enqueued_at", 0.0)),
                dirty_streak=int(body.get("dirty_streak", 0)),
                dirty_causes=tuple(str(c) for c in body.get("dirty_causes", ())),
            )
        except (TypeError, ValueError) as e:
            raise PayloadError(f"payload field has the wrong type: {e}") from e


def _optional_float(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {value!r}")
    return number


def job_id_of_raw(raw: str | bytes) -> str | None:
    """Best effort: the id inside a payload that failed to parse, to name it in the record."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    job_id = body.get("id") if isinstance(body, dict) else None
    return job_id if isinstance(job_id, str) else None


@dataclass(frozen=True)
class ChildReport:
    """What a child tells its parent over the report pipe before it exits.

    A child that is SIGKILLed never sends one; its absence is itself evidence.
    """

    ok: bool
    result: JSON = None
    cause: Cause | None = None  # EXCEPTION, or one of the "could not start" causes
    exc_type: str = ""
    exc_message: str = ""
    traceback: str = ""

    def to_json(self) -> str:
        body = asdict(self)
        body["cause"] = self.cause.value if self.cause else None
        return json.dumps(body, separators=(",", ":"), default=repr)

    @classmethod
    def from_json(cls, raw: bytes) -> ChildReport:
        body = json.loads(raw)
        cause = body.get("cause")
        return cls(
            ok=bool(body["ok"]),
            result=body.get("result"),
            cause=Cause(cause) if cause else None,
            exc_type=body.get("exc_type", ""),
            exc_message=body.get("exc_message", ""),
            traceback=body.get("traceback", ""),
        )


@dataclass(frozen=True)
class Verdict:
    """The classification of one ending (see :mod:`sigrun.runner.exits`)."""

    outcome: Outcome
    cause: Cause | None = None
    message: str = ""
    signal: int | None = None
    signal_name: str | None = None
    exit_code: int | None = None


@dataclass(frozen=True)
class RunnerIdentity:
    """Who ran the job: enough to find the pod in ``kubectl`` afterwards."""

    runner_id: str
    hostname: str
    pid: int
    pod_name: str | None = None
    pod_uid: str | None = None
    pod_namespace: str | None = None
    started_at: float = 0.0  # tells a restarted container's new runner from the dead one


@dataclass(frozen=True)
class Record:
    """A failure or DirtyExit, as kept per queue and shown by ``sigrun failed``.

    Field names are the stored names; keep them stable, the operator and any
    dashboard read them.
    """

    job_id: str
    queue: str
    func: str
    args: tuple[JSON, ...]
    kwargs: Mapping[str, JSON]
    attempt: int
    outcome: Outcome
    cause: Cause | None
    message: str
    failed_at: float
    signal: int | None = None
    signal_name: str | None = None
    exit_code: int | None = None
    pid: int | None = None
    peak_rss_bytes: int | None = None
    runtime_seconds: float | None = None
    runner_id: str | None = None
    hostname: str | None = None
    pod_name: str | None = None
    pod_uid: str | None = None
    exc_type: str = ""
    exc_message: str = ""
    traceback: str = ""
    last_words: tuple[str, ...] = ()
    gave_up: bool = False
    collateral: bool = False

    def to_json(self) -> str:
        body = asdict(self)
        body["outcome"] = self.outcome.value
        body["cause"] = self.cause.value if self.cause else None
        body["args"] = list(self.args)
        body["kwargs"] = dict(self.kwargs)
        body["last_words"] = list(self.last_words)
        return json.dumps(body, separators=(",", ":"), default=repr)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Record:
        body = json.loads(raw)
        body["outcome"] = Outcome(body["outcome"])
        body["cause"] = Cause(body["cause"]) if body.get("cause") else None
        body["args"] = tuple(body.get("args", ()))
        body["last_words"] = tuple(body.get("last_words", ()))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in body.items() if k in known})


def now() -> float:
    """Wall-clock seconds; one place so records agree on the clock they use."""
    return time.time()

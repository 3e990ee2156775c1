"""What the runner and its fork server say to each other: one JSON object a line.

Pure: encoding and decoding only, no I/O.  The runner writes commands on one
pipe, the fork server writes events on another; each message is a JSON object
on one line (JSON never puts a raw newline inside a value).  Every job the
runner hands over gets a number, ``ref``, that names it in both directions (a
job id may be running twice).

runner -> fork server::

    {"op": "config", ...}                           first, once: see config_to_json
    {"op": "run", "ref": 7, "queue": "q", "job": "<payload JSON>"}
    {"op": "abandon", "ref": 7}                     the runner stopped waiting: kill, reap
    {"op": "kill_all", "reason": "shutdown", "grace": 30.0}

fork server -> runner::

    {"ev": "ready", "pid": 1234}
    {"ev": "started", "ref": 7, "pid": 1240}
    {"ev": "line", "ref": 7, "line": "loaded 3.1M rows"}     output, when forwarded
    {"ev": "warning", "ref": 7, "message": "..."}            ref may be null
    {"ev": "ended", "ref": 7, "ending": {...}}               see ending_to_json
    {"ev": "failed", "ref": 7, "errno": 11, "error": "..."}  could not fork

End of file on the command pipe means the runner is gone: the fork server exits.
End of file on the event pipe means the fork server is gone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sigrun.runner.cgroup import MemoryCgroup
from sigrun.runner.exits import Ending, KillReason
from sigrun.runner.jobs import Cause, ChildReport
from sigrun.runner.supervision import SupervisorConfig

__all__ = [
    "Lines",
    "config_from_json",
    "config_to_json",
    "decode",
    "encode",
    "ending_from_json",
    "ending_to_json",
]

_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def encode(message: Mapping[str, Any]) -> bytes:
    return _dumps(message).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    body = json.loads(line)
    if not isinstance(body, dict):
        raise ValueError(f"expected a JSON object, got {type(body).__name__}")
    return body


class Lines:
    """Cuts a byte stream into complete lines, keeping an unfinished one for later."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        if self._partial:
            data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        return lines


def ending_to_json(ending: Ending) -> dict[str, Any]:
    report = ending.report
    return {
        "pid": ending.pid,
        "status": ending.wait_status,
        "peak": ending.peak_rss_bytes,
        "runtime": ending.runtime_seconds,
        "report": None if report is None else _report_to_json(report),
        "oom_kills": ending.oom_kills,
        "killed_by": ending.killed_by.value if ending.killed_by else None,
        "limit": ending.memory_limit_bytes,
        "timeout": ending.timeout_seconds,
        "grace": ending.grace_seconds,
        "last_words": list(ending.last_words),
    }


def ending_from_json(body: Mapping[str, Any]) -> Ending:
    report = body["report"]
    killed_by = body["killed_by"]
    return Ending(
        pid=int(body["pid"]),
        wait_status=int(body["status"]),
        peak_rss_bytes=body["peak"],
        runtime_seconds=float(body["runtime"]),
        report=None if report is None else _report_from_json(report),
        oom_kills=body["oom_kills"],
        killed_by=KillReason(killed_by) if killed_by else None,
        memory_limit_bytes=body["limit"],
        timeout_seconds=body["timeout"],
        grace_seconds=body["grace"],
        last_words=tuple(body["last_words"]),
    )


def _report_to_json(report: ChildReport) -> dict[str, Any]:
    try:
        _dumps(report.result)
        result = report.result
    except (TypeError, ValueError):  # NaN, say: kept as its repr, as the child does
        result = repr(report.result)
    return {
        "ok": report.ok,
        "result": result,
        "cause": report.cause.value if report.cause else None,
        "exc_type": report.exc_type,
        "exc_message": report.exc_message,
        "traceback": report.traceback,
    }


def _report_from_json(body: Mapping[str, Any]) -> ChildReport:
    cause = body["cause"]
    return ChildReport(
        ok=bool(body["ok"]),
        result=body["result"],
        cause=Cause(cause) if cause else None,
        exc_type=body["exc_type"],
        exc_message=body["exc_message"],
        traceback=body["traceback"],
    )


def config_to_json(
    config: SupervisorConfig, *, sys_path: list[str], preload: bool
) -> dict[str, Any]:
    cgroup = config.child_cgroup
    return {
        "op": "config",
        "sys_path": sys_path,
        "preload": preload,
        "allowed_modules": list(config.allowed_modules),
        "default_timeout": config.default_timeout,
        "last_words_lines": config.last_words_lines,
        "child_cgroup": None if cgroup is None else [str(cgroup.path), cgroup.version],
        "child_oom_score_adj": config.child_oom_score_adj,
        "forward_output": config.forward_output,
        "child_faulthandler": config.child_faulthandler,
    }


def config_from_json(body: Mapping[str, Any]) -> tuple[SupervisorConfig, list[str], bool]:
    """The supervisor config, the runner's ``sys.path`` and whether to preload job modules."""
    cgroup = body["child_cgroup"]
    config = SupervisorConfig(
        allowed_modules=tuple(body["allowed_modules"]),
        default_timeout=body["default_timeout"],
        last_words_lines=int(body["last_words_lines"]),
        child_cgroup=None if cgroup is None else MemoryCgroup(Path(cgroup[0]), cgroup[1]),
        child_oom_score_adj=body["child_oom_score_adj"],
        forward_output=bool(body["forward_output"]),
        child_faulthandler=bool(body["child_faulthandler"]),
    )
    return config, list(body["sys_path"]), bool(body["preload"])

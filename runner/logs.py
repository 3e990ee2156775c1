"""Logging set-up: once per process, plain lines for people or JSON lines for collectors.

Runner log calls pass ``extra={"job_id": ..., "queue": ...}``; the JSON format
keeps those as fields so a log pipeline can group a job's lines, including the
lines the job's own child printed.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Literal

LogFormat = Literal["plain", "json"]

_FIELDS = ("job_id", "queue")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                body[name] = value
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def setup_logging(level: str = "INFO", fmt: LogFormat = "plain") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

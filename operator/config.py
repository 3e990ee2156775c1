"""The operator's process settings: one typed value from the command line, and kopf's knobs.

Why each kopf setting is what it is:

* standalone (no peering): kopf is single-active; the chart runs one replica
  with ``strategy: Recreate``, so there is never a second instance to defer to,
  and no KopfPeering RBAC is needed;
* server-side watch timeouts a little under the API server's own, client
  timeouts a little over, so a watch silently dropped by a load balancer is
  noticed and restarted (kopf's inactivity timeout covers the rest);
* kopf posts its own Events only for errors (a handler that crashed), under our
  component name; everything users should read — DirtyExit, Scaled, Ready
  problems — is posted by :mod:`sigrun.operator.events`, counted, not flooded;
* kopf's bookkeeping lives in ``sigrun.dev/`` annotations on JobQueues, and the
  pod watch is filtered on the server by the runner label, so kopf never reads
  (or writes) any other pod;
* namespaced mode turns cluster scanning off: no cluster-wide RBAC for
  namespaces and CRDs is needed;
* a deleted JobQueue waits for its timer's current tick (under a second), not
  for kopf's default one-minute poll, before its finalizer goes.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

import kopf

from sigrun.operator.deployment import LABEL_NAME, RUNNER_APP
from sigrun.operator.events import COMPONENT
from sigrun.runner.logs import JsonFormatter


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    runner_image: str = ""
    liveness: str | None = None  # e.g. http://0.0.0.0:8080/healthz
    instance: str = ""  # this operator's pod name, in Events' reportingInstance
    event_window: float = 600.0

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


def default_instance() -> str:
    return os.environ.get("SIGRUN_POD_NAME") or socket.gethostname()


def configure(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    settings.peering.standalone = True
    settings.posting.level = logging.ERROR
    settings.posting.reporting_component = COMPONENT
    settings.posting.reporting_instance = config.instance
    settings.posting.event_name_prefix = "sigrun-operator-"
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    settings.watching.label_selectors["v1", "pods"] = f"{LABEL_NAME}={RUNNER_APP}"
    settings.persistence.finalizer = "sigrun.dev/operator"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="sigrun.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="sigrun.dev", key="last-handled-configuration"
    )
    settings.scanning.disabled = not config.clusterwide
    # A JobQueue's timer may be mid-tick when it is deleted: wait for that tick briefly, then
    # look again every 2 s (kopf's default is a minute, which kubectl delete feels).
    settings.background.instant_exit_timeout = 0.5
    settings.background.cancellation_polling = 2.0


class OperatorJsonFormatter(JsonFormatter):
    """The runner's JSON lines, plus the object a kopf log line is about."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ref: Any = getattr(record, "k8s_ref", None)
        named: Any = getattr(record, "object", None)  # our own lines: extra={"object": "ns/name"}
        if not isinstance(ref, dict) and not isinstance(named, str):
            return line
        body = json.loads(line)
        if isinstance(ref, dict):
            body["object"] = "/".join(str(ref[k]) for k in ("namespace", "name") if ref.get(k))
            if ref.get("kind"):
                body["kind"] = ref["kind"]
        else:
            body["object"] = named
        return json.dumps(body, default=str)


def use_json_lines() -> None:
    """Swap the formatter the runner CLI installed for one that also names kopf's objects."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(OperatorJsonFormatter())

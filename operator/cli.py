"""``sigrun operator``: run the operator (kopf) for every namespace or a few.

Plugged into the runner's CLI through the ``sigrun.commands`` entry point, so
the runner never imports the operator.  Options read environment variables too
(named in each help text), which is how the chart configures it.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING, Any

from sigrun.runner.errors import ConfigError

if TYPE_CHECKING:
    from sigrun.operator.kube import Kube

log = logging.getLogger(__name__)


def _env_list(name: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "operator",
        help="run the Kubernetes operator (reconciles JobQueue resources)",
        description=(
            "Keeps a runner Deployment for every JobQueue, scales it from the queue depth, "
            "records the jobs of runner pods that died (OOM-killed, evicted, deleted) and posts "
            "DirtyExit Events on the JobQueue. Uses the in-cluster service account, else "
            "KUBECONFIG."
        ),
    )
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=None,
        metavar="NS",
        help="namespace to watch; repeat for several; default: all namespaces "
        "[env SIGRUN_WATCH_NAMESPACES, comma-separated]",
    )
    parser.add_argument(
        "--runner-image",
        default=os.environ.get("SIGRUN_RUNNER_IMAGE", ""),
        metavar="IMAGE",
        help="image for JobQueues that name none [env SIGRUN_RUNNER_IMAGE]",
    )
    parser.add_argument(
        "--liveness",
        default=os.environ.get("SIGRUN_LIVENESS") or None,
        metavar="URL",
        help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz [env SIGRUN_LIVENESS]",
    )
    parser.add_argument(
        "--event-window",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="repeats of the same Event within this window are counted on one Event "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("SIGRUN_LOG_LEVEL", "INFO"),
        help="[env SIGRUN_LOG_LEVEL]",
    )
    parser.add_argument(
        "--log-format",
        choices=("plain", "json"),
        default=os.environ.get("SIGRUN_LOG_FORMAT", "plain"),
        help="plain lines, or one JSON object a line [env SIGRUN_LOG_FORMAT]",
    )
    parser.set_defaults(handler=run)


def require_crd(kube: Kube) -> None:
    from sigrun.operator.spec import GROUP, PLURAL, VERSION  # noqa: PLC0415

    found = kube.get_blocking(f"/apis/{GROUP}/{VERSION}") or {}
    if not any(r.get("name") == PLURAL for r in found.get("resources") or ()):
        raise ConfigError(
            f"the JobQueue CRD ({PLURAL}.{GROUP}, {VERSION}) is not installed: apply "
            "charts/sigrun/crds-src/jobqueue.yaml (or install the chart with crds.install=true) "
            "and start the operator again"
        )


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: every `sigrun` command loads this module to register
    # the subcommand, and a runner must not pay for importing kopf.
    import kopf  # noqa: PLC0415

    from sigrun.operator import handlers  # noqa: F401, PLC0415 - registers the handlers
    from sigrun.operator.config import (  # noqa: PLC0415
        OperatorConfig,
        default_instance,
        use_json_lines,
    )
    from sigrun.operator.events import EventRecorder  # noqa: PLC0415
    from sigrun.operator.kube import Kube, load_configuration  # noqa: PLC0415
    from sigrun.operator.monitor import Context  # noqa: PLC0415
    from sigrun.operator.state import Fleet  # noqa: PLC0415

    if args.log_format == "json":
        use_json_lines()
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # kopf says "Handler ... succeeded" for every pod event and every tick; keep its
        # warnings and errors, and our own lines about what changed.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    config = OperatorConfig(
        namespaces=tuple(args.namespace or _env_list("SIGRUN_WATCH_NAMESPACES")),
        runner_image=args.runner_image,
        liveness=args.liveness,
        instance=default_instance(),
        event_window=args.event_window,
    )
    kube = Kube(load_configuration())
    if not config.clusterwide:
        # Watching named namespaces, kopf does not look for CRDs installed later (that would
        # need cluster-wide RBAC): without the CRD now, exit and let the pod restart.
        require_crd(kube)
    ctx = Context(
        kube=kube,
        events=EventRecorder(kube, instance=config.instance, window=config.event_window),
        fleet=Fleet(),
        runner_image=config.runner_image,
    )
    log.info(
        "sigrun operator %s: watching %s",
        config.instance,
        ", ".join(config.namespaces) if config.namespaces else "all namespaces",
    )
    try:
        kopf.run(
            standalone=True,
            clusterwide=config.clusterwide,
            namespaces=config.namespaces,
            liveness_endpoint=config.liveness,
            memo=kopf.Memo(config=config, sigrun=ctx),
        )
    finally:
        kube.close()
    return 0

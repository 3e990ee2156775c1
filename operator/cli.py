"""The ``sigrun operator`` subcommand, plugged into the runner's CLI by entry point."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "operator", help="run the Kubernetes operator (reconciles JobQueue resources)"
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    raise SystemExit("sigrun operator: not built yet (see the operator issue)")

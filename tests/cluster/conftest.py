"""Loads the cluster fixtures for ``pytest tests/cluster`` run on its own.

Why not ``pytest_plugins`` here: pytest only accepts that in the top-level conftest. The suite
should register ``tests.cluster.fixture`` there (tests/conftest.py); importing it again here is
then a no-op, because pytest's plugin manager loads a module once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_REPO_ROOT = str(Path(__file__).resolve().parents[2])


def pytest_configure(config: pytest.Config) -> None:
    # `tests.cluster` must be importable by that name (the plugin, `python -m tests.cluster` and
    # the test modules all use it); plain `pytest` does not put the repo root on sys.path.
    # Appended, not prepended: the repo's operator/ folder must never shadow the stdlib module.
    if _REPO_ROOT not in sys.path:
        sys.path.append(_REPO_ROOT)
    config.pluginmanager.import_plugin("tests.cluster.fixture")

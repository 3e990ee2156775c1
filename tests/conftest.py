"""Fixtures shared by every tier: a real redis-server, and a way to run the real CLI."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as raw_redis

from sigrun.runner.redisio import SyncRedis, connect
from sigrun.runner.redisserver import RedisServer

REPO = Path(__file__).resolve().parent.parent

# The local Kubernetes control plane (fixtures `cluster`, `namespace`, `api_client`).
pytest_plugins = ["tests.cluster.fixture"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server on a free loopback port for the whole session."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for each test."""
    with raw_redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def redis(redis_url: str) -> Iterator[SyncRedis]:
    """The client the CLI uses (typed by sigrun's own Protocol)."""
    client = connect(redis_url)
    yield client
    client.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[raw_redis.Redis]:
    """A plain redis-py client, for poking at keys the way an outsider would."""
    with raw_redis.Redis.from_url(redis_url, decode_responses=True) as client:
        yield client


def sigrun_command(*args: str) -> list[str]:
    """The CLI, with the repository on a runner's job path (for ``tests.*`` job modules).

    Never via PYTHONPATH: the repository's ``operator/`` folder would shadow the
    standard library's ``operator`` module before Python finishes starting.
    """
    extra = ["--path", str(REPO)] if args[:1] == ("work",) else []
    # -P: the current directory may be the repository root; it must not go on sys.path.
    return [sys.executable, "-P", "-m", "sigrun.runner.cli", *args, *extra]


def run_sigrun(
    *args: str, timeout: float = 60, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the real ``sigrun`` CLI and wait for it."""
    done = subprocess.run(
        sigrun_command(*args), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"sigrun {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


def start_sigrun(*args: str, log: Path) -> subprocess.Popen[bytes]:
    """Start a long-running ``sigrun`` (a runner) with its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(sigrun_command(*args), stdout=out, stderr=subprocess.STDOUT)

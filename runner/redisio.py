"""The slice of the Redis client sigrun uses, typed, and how connections are made.

redis-py's own annotations return ``T | Awaitable[T]`` from every method, which
would spread casts and ``Any`` through the code.  The Protocols below name only
the calls sigrun makes, with the types they really return for a client created
with ``decode_responses=True``; :func:`connect_async` and :func:`connect` are
the only places that cast.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any, Protocol, cast
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
from redis.exceptions import ConnectionError as _RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as _RedisTimeoutError

#: Errors that mean "Redis is not there right now"; callers retry these.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    _RedisConnectionError,
    _RedisTimeoutError,
    ConnectionError,
    OSError,
)


class AsyncPipeline(Protocol):
    def evalsha(self, sha: str, numkeys: int, *keys_and_args: str | int | float) -> Any: ...
    def hset(self, name: str, mapping: Mapping[str, str | int | float]) -> Any: ...
    def expire(self, name: str, time: int) -> Any: ...
    def llen(self, name: str) -> Any: ...
    def hgetall(self, name: str) -> Any: ...
    def exists(self, *names: str) -> Any: ...
    def sadd(self, name: str, *values: str) -> Any: ...
    async def execute(self, raise_on_error: bool = True) -> list[Any]: ...


class AsyncRedis(Protocol):
    async def ping(self) -> bool: ...
    async def blmove(
        self, first_list: str, second_list: str, timeout: float, src: str, dest: str
    ) -> str | None: ...
    async def hset(self, name: str, mapping: Mapping[str, str | int | float]) -> int: ...
    async def hget(self, name: str, key: str) -> str | None: ...
    async def hgetall(self, name: str) -> dict[str, str]: ...
    async def hdel(self, name: str, *keys: str) -> int: ...
    async def lrange(self, name: str, start: int, end: int) -> list[str]: ...
    async def llen(self, name: str) -> int: ...
    async def smembers(self, name: str) -> set[str]: ...
    async def sadd(self, name: str, *values: str) -> int: ...
    async def zrange(
        self, name: str, start: int, end: int, withscores: bool = False
    ) -> list[tuple[str, float]]: ...
    async def exists(self, *names: str) -> int: ...
    async def delete(self, *names: str) -> int: ...
    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: str | int | float) -> Any: ...
    async def eval(self, script: str, numkeys: int, *keys_and_args: str | int | float) -> Any: ...
    def pipeline(self, transaction: bool = True) -> AsyncPipeline: ...
    async def aclose(self) -> None: ...


class SyncRedis(Protocol):
    def ping(self) -> bool: ...
    def hgetall(self, name: str) -> dict[str, str]: ...
    def hget(self, name: str, key: str) -> str | None: ...
    def hkeys(self, name: str) -> list[str]: ...
    def llen(self, name: str) -> int: ...
    def lrange(self, name: str, start: int, end: int) -> list[str]: ...
    def zcard(self, name: str) -> int: ...
    def zrevrange(self, name: str, start: int, end: int, withscores: bool = False) -> Any: ...
    def zrem(self, name: str, *values: str) -> int: ...
    def smembers(self, name: str) -> set[str]: ...
    def sadd(self, name: str, *values: str) -> int: ...
    def exists(self, *names: str) -> int: ...
    def scan_iter(self, match: str | None = None, count: int | None = None) -> Any: ...
    def xrevrange(
        self, name: str, max: str = "+", min: str = "-", count: int | None = None
    ) -> list[tuple[str, dict[str, str]]]: ...
    def evalsha(self, sha: str, numkeys: int, *keys_and_args: str | int | float) -> Any: ...
    def eval(self, script: str, numkeys: int, *keys_and_args: str | int | float) -> Any: ...
    def close(self) -> None: ...


def connect_async(
    url: str, *, password: str | None = None, max_connections: int | None = None
) -> AsyncRedis:
    """A client for the runner and the operator.  Connections are made lazily.

    ``password`` (from a Secret, in a pod) overrides one in the URL, so the URL
    itself can sit in a ConfigMap or on a command line without the secret.
    """
    extra: dict[str, Any] = {"password": password} if password else {}
    client = redis.asyncio.Redis.from_url(
        url,
        **extra,
        decode_responses=True,
        max_connections=max_connections,
        socket_connect_timeout=5,
        health_check_interval=0,
    )
    return cast(AsyncRedis, client)


def connect(url: str, *, password: str | None = None) -> SyncRedis:
    """A client for the CLI and for code that enqueues jobs."""
    extra: dict[str, Any] = {"password": password} if password else {}
    client = redis.Redis.from_url(url, **extra, decode_responses=True, socket_connect_timeout=5)
    return cast(SyncRedis, client)


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class Script:
    """A Lua script from ``runner/lua``, run by its SHA and loaded on first miss."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = resources.files("sigrun.runner").joinpath(f"lua/{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def run(
        self, client: AsyncRedis, keys: Sequence[str], args: Sequence[str | int | float]
    ) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)

    def run_sync(
        self, client: SyncRedis, keys: Sequence[str], args: Sequence[str | int | float]
    ) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return client.eval(self.source, len(keys), *keys, *args)


#: One script run: the script, its keys, its arguments.
ScriptCall = tuple[Script, Sequence[str], Sequence[str | int | float]]


async def run_pipelined(client: AsyncRedis, calls: Sequence[ScriptCall]) -> list[Any]:
    """Run several scripts in one round trip, in order; each is atomic, the group is not.

    A script Redis has not cached (NOSCRIPT: it did not run) is sent again alone,
    with its source; any other error is raised.
    """
    pipe = client.pipeline(transaction=False)
    for script, keys, args in calls:
        pipe.evalsha(script.sha, len(keys), *keys, *args)
    results = await pipe.execute(raise_on_error=False)
    for i, (script, keys, args) in enumerate(calls):
        if isinstance(results[i], NoScriptError):
            results[i] = await client.eval(script.source, len(keys), *keys, *args)
        elif isinstance(results[i], Exception):
            raise results[i]
    return results

"""A counting TCP proxy in front of Redis: how many commands and round trips a worker makes.

Workers under test connect to the proxy instead of Redis.  For every
connection it counts

* commands: top-level RESP arrays (or inline commands) the client sends -- what
  crosses the wire; commands a Lua script runs inside Redis are not among them
  (``INFO commandstats`` counts those, see the cost scenario);
* round trips: exchanges in which the client sends and then waits for Redis.  A
  new round trip starts when the client sends after Redis has answered (or for
  the first time); a pipeline sent in one go is one round trip however many
  commands it holds, and a blocking BLMOVE is one round trip however long it
  blocks.

It runs on its own thread and event loop, so it adds a little latency to every
round trip: use it only where counts matter, never where time is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass


@dataclass
class Counts:
    commands: int = 0
    round_trips: int = 0
    connections: int = 0


class RespCommands:
    """Counts complete commands in a client's byte stream, fed in arbitrary chunks."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> int:
        self._buffer += data
        count = 0
        while (end := _command_end(self._buffer)) is not None:
            self._buffer = self._buffer[end:]
            count += 1
        return count


def _command_end(buffer: bytes) -> int | None:
    """Where the first complete command in ``buffer`` ends, or None if it is incomplete."""
    line_end = buffer.find(b"\r\n")
    if line_end < 0:
        return None
    if not buffer.startswith(b"*"):
        return line_end + 2  # an inline command: one line
    position = line_end + 2
    for _ in range(int(buffer[1:line_end])):
        header_end = buffer.find(b"\r\n", position)
        if header_end < 0:
            return None
        size = int(buffer[position + 1 : header_end])  # "$<size>"
        position = header_end + 2 + size + 2
        if position > len(buffer):
            return None
    return position


class CountingProxy:
    """``with CountingProxy(port) as proxy: proxy.url ... proxy.counts``."""

    def __init__(self, redis_port: int, host: str = "127.0.0.1") -> None:
        self._target = (host, redis_port)
        self._host = host
        self.port = 0
        self._counts = Counts()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://{self._host}:{self.port}/0"

    @property
    def counts(self) -> Counts:
        with self._lock:
            return Counts(self._counts.commands, self._counts.round_trips, self._counts.connections)

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, self._host, 0), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            redis_r, redis_w = await asyncio.open_connection(*self._target)
        except OSError:
            client_w.close()
            return
        with self._lock:
            self._counts.connections += 1
        answered = [True]  # Redis has spoken since the client last did
        parser = RespCommands()

        async def upstream() -> None:
            while data := await client_r.read(65536):
                commands = parser.feed(data)
                with self._lock:
                    self._counts.commands += commands
                    if answered[0]:
                        self._counts.round_trips += 1
                answered[0] = False
                redis_w.write(data)
                await redis_w.drain()

        async def downstream() -> None:
            while data := await redis_r.read(65536):
                answered[0] = True
                client_w.write(data)
                await client_w.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for writer in (client_w, redis_w):
            with contextlib.suppress(Exception):
                writer.close()

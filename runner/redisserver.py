"""Start a throwaway ``redis-server`` on a free loopback port (the demo and the tests).

Persistence is off and the data lives in a temporary directory; the server is
stopped by the PID this module started, never by name.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from sigrun.runner.errors import SigrunError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """``with RedisServer() as server: server.url`` — a private Redis for one run."""

    def __init__(self, binary: str | None = None, *, persistent: bool = False) -> None:
        found = binary or shutil.which("redis-server")
        if not found:
            raise SigrunError(
                "redis-server is not installed: run 'apt-get install redis-server' "
                "(or scripts/setup), or pass --redis URL to use a running Redis"
            )
        self.binary = found
        self.persistent = persistent  # append-only file, so a restart keeps the data
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self._dir = tempfile.TemporaryDirectory(prefix="sigrun-redis-")
        for _ in range(5):  # another process may take the port between probe and bind
            self.port = free_port()
            if self._launch():
                return self
        raise SigrunError(f"redis-server did not start; see {self._dir.name}/redis.log")

    def start_again(self) -> None:
        """Restart on the same port and data directory (after :meth:`stop`)."""
        if not self._launch():
            raise SigrunError(f"redis-server did not restart on port {self.port}")

    def _launch(self) -> bool:
        assert self._dir is not None
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.persistent else "no",
                "--appendfsync",
                "always",
                "--dir",
                self._dir.name,
                "--logfile",
                str(Path(self._dir.name) / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if self._wait_ready():
            return True
        self.stop()
        return False

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

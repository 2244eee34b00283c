"""A redis-server of our own: a private port, a directory of its own, AOF as asked. The
benchmarks start theirs through this, and so do the tests (tests/redis_servers.py)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.server import free_port

# What stream mode demands: every write on disk before Redis answers.
DURABLE = ("--appendonly", "yes", "--appendfsync", "always")


@dataclass
class RedisServer:
    directory: Path
    options: tuple[str, ...] = DURABLE
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # An ACL user of its own ("--user NAME on >PASSWORD ..." in options): the URL carries it.
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        credentials = f"{self.username or ''}:{self.password}@" if self.password else ""
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        command = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--save", "", "--logfile", str(self.directory / "redis.log"), *self.options,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                # While it loads its AOF, Redis answers LOADING: wait until it serves.
                probe = redis.Redis(port=self.port, socket_timeout=1, username=self.username, password=self.password)
                if probe.ping():
                    return
            except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """kill -9: no shutdown, no final fsync; what survives is what the AOF already held."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


@contextmanager
def redis_server(directory: Path, *options: str) -> Iterator[RedisServer]:
    """A started server (DURABLE unless options are given), killed on exit."""
    server = RedisServer(directory, options or DURABLE)
    server.start()
    try:
        yield server
    finally:
        server.kill()

"""redis-server processes of the tests' own: private ports, temporary directories, AOF as asked.

The machine's Redis keeps nothing on disk, so durability is tested only against these.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.processes import free_port


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too: cluster nodes need both, below 55536."""
    for _ in range(100):
        port = random.randrange(20000, 45000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return path


@dataclass
class RedisServer:
    directory: Path
    options: tuple[str, ...] = ("--appendonly", "yes", "--appendfsync", "always")
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [
            _redis_server(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--save", "", "--logfile", str(self.directory / "redis.log"), *self.options,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                # While it loads its AOF, Redis answers LOADING: wait until it serves.
                if redis.Redis(port=self.port, socket_timeout=1).ping():
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

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@contextmanager
def redis_server(directory: Path, *options: str) -> Iterator[RedisServer]:
    server = RedisServer(directory, options) if options else RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@contextmanager
def redis_cluster(directory: Path, masters: int = 3) -> Iterator[list[RedisServer]]:
    """A local Redis Cluster of `masters` primaries (no replicas), AOF always on each."""
    servers = []
    try:
        for n in range(masters):
            node_dir = directory / f"node{n}"
            node_dir.mkdir()
            cluster_options = (
                "--appendonly", "yes", "--appendfsync", "always", "--cluster-enabled", "yes",
                "--cluster-config-file", str(node_dir / "nodes.conf"), "--cluster-node-timeout", "2000",
            )  # fmt: skip
            server = RedisServer(node_dir, cluster_options, port=cluster_port())
            server.start()
            servers.append(server)
        addresses = [f"127.0.0.1:{server.port}" for server in servers]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not all(_cluster_state(server.port) == "ok" for server in servers):
            if time.monotonic() > deadline:
                raise RuntimeError("the local Redis Cluster did not become ready")
            time.sleep(0.1)
        yield servers
    finally:
        for server in servers:
            server.kill()


def _cluster_state(port: int) -> str:
    info: Any = redis.Redis(port=port, decode_responses=True).cluster("info")
    return str(info.get("cluster_state", ""))

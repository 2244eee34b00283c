"""redis-server processes of the tests' own: private ports, temporary directories, AOF as asked.

The machine's Redis keeps nothing on disk, so durability is tested only against these. A
single server is bench.redis_server's; this adds the skip (a failure in CI) where no
redis-server is installed, and a local Redis Cluster.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from bench.redis_server import DURABLE, RedisServer
from bench.redis_server import redis_server as bench_redis_server

__all__ = ["RedisServer", "redis_cluster", "redis_server", "stream_mode_on"]


@contextmanager
def stream_mode_on(settings: Any, url: str, *, cluster: bool = False, shards: int = 1) -> Iterator[None]:
    """Stream mode on the Redis at url for the block (settings: pytest-django's fixture), with a
    fresh client before and after it."""
    from events.ingest import stream  # noqa: PLC0415 - Django is set up by the time a test runs

    settings.AUDITSVC_INGEST_MODE = "stream"
    settings.AUDITSVC_STREAM_URL = url
    settings.AUDITSVC_STREAM_CLUSTER = cluster
    settings.AUDITSVC_STREAM_SHARDS = shards
    stream.forget_client()
    try:
        yield
    finally:
        stream.forget_client()


def _require_redis_server() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")


def redis_server(directory: Path, *options: str) -> AbstractContextManager[RedisServer]:
    """A started redis-server (AOF always unless options say otherwise), killed on exit."""
    _require_redis_server()
    return bench_redis_server(directory, *options)


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


@contextmanager
def redis_cluster(directory: Path, masters: int = 3) -> Iterator[list[RedisServer]]:
    """A local Redis Cluster of `masters` primaries (no replicas), AOF always on each."""
    _require_redis_server()
    servers = []
    try:
        for n in range(masters):
            node_dir = directory / f"node{n}"
            node_dir.mkdir()
            cluster_options = (
                *DURABLE, "--cluster-enabled", "yes",
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

"""Run the service under gunicorn (or granian, for bench.servers_ab) for a benchmark, with its production settings."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def gunicorn(
    port: int,
    *,
    workers: int = 2,
    worker_class: str = "gthread",
    threads: int = 4,
    app: str = "auditsvc.wsgi",
    environment: Mapping[str, str] | None = None,
    stderr: IO[bytes] | None = None,
    tree: Path = ROOT,
) -> Iterator[subprocess.Popen[bytes]]:
    """gunicorn on 127.0.0.1:port with gunicorn.conf.py, of the checkout at tree (this one, or an
    older commit's for an A/B run); waits until /healthz answers. (The tests start theirs through
    this too: tests/processes.py.) Its log lines go to stderr."""
    env = {
        **os.environ, "DEBUG": "false", "LOG_FORMAT": "json", "WEB_CONCURRENCY": str(workers), "GUNICORN_THREADS": str(threads),
        **(environment or {}),
    }  # fmt: skip
    command = [
        str(Path(sys.executable).parent / "gunicorn"), app, "-c", str(tree / "gunicorn.conf.py"),
        "-b", f"127.0.0.1:{port}", "-k", worker_class, "--log-level", "warning",
    ]  # fmt: skip
    with _serving(subprocess.Popen(command, cwd=tree, env=env, stderr=stderr), port, "gunicorn") as process:
        yield process


@contextmanager
def granian(
    port: int,
    *,
    workers: int = 2,
    threads: int = 8,
    app: str = "auditsvc.wsgi",
    environment: Mapping[str, str] | None = None,
    stderr: IO[bytes] | None = None,
    extra: tuple[str, ...] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """granian (Rust HTTP, WSGI interface) on 127.0.0.1:port, for bench.servers_ab: workers
    processes, each calling the application from threads blocking threads (gunicorn's gthread
    threads; one Rust runtime thread per worker does the sockets, as gunicorn's main thread
    does). It reads no gunicorn.conf.py: the multiprocess metrics directory is made here."""
    env = {
        **os.environ, "DEBUG": "false", "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="auditsvc-metrics-"),
        **(environment or {}),
    }  # fmt: skip
    command = [
        str(Path(sys.executable).parent / "granian"), "--interface", "wsgi", "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers), "--blocking-threads", str(threads),
        "--runtime-threads", "1", "--no-ws", "--log-level", "warning", *extra, f"{app}:application",
    ]  # fmt: skip
    with _serving(subprocess.Popen(command, cwd=ROOT, env=env, stderr=stderr), port, "granian") as process:
        yield process


@contextmanager
def _serving(process: subprocess.Popen[bytes], port: int, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """process, once /healthz answers on port; terminated (SIGTERM, a graceful stop) on leaving."""
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{name} did not come up") from None
                time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set size since it started."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0

"""Run the service under gunicorn for a benchmark, with its production settings."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
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
    process = subprocess.Popen(command, cwd=tree, env=env, stderr=stderr)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("gunicorn did not come up") from None
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

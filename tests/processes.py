"""Helpers for tests that run the service's commands as processes of their own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from django.db import connection

from tests.paths import REPO_ROOT


def database_url() -> str:
    """DATABASE_URL of the test database, for a child process."""
    settings = connection.settings_dict
    host = quote(settings["HOST"] or "", safe="")
    port = f":{settings['PORT']}" if settings["PORT"] else ""
    return f"postgresql://{quote(settings['USER'] or '')}@{host}{port}/{settings['NAME']}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def gunicorn(**environment: str) -> Iterator[str]:
    """A real gunicorn (gunicorn.conf.py) on the test database; yields its base URL."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url(), "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "2", **environment}
    command = [str(Path(sys.executable).parent / "gunicorn"), "auditsvc.wsgi", "-c", "gunicorn.conf.py",
               "-b", f"127.0.0.1:{port}", "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(20)

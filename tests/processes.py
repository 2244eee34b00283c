"""Helpers for tests that run the service's commands as processes of their own."""

from __future__ import annotations

from urllib.parse import quote

from django.db import connection


def database_url() -> str:
    """DATABASE_URL of the test database, for a child process."""
    settings = connection.settings_dict
    host = quote(settings["HOST"] or "", safe="")
    port = f":{settings['PORT']}" if settings["PORT"] else ""
    return f"postgresql://{quote(settings['USER'] or '')}@{host}{port}/{settings['NAME']}"

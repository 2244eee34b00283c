"""Set up Django for a benchmark script run as `python -m bench.<name>` from the repository root."""

from __future__ import annotations

import os

import django


def setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "auditsvc.settings")
    from auditsvc.embedded_db import start_embedded_database_if_configured  # noqa: PLC0415

    start_embedded_database_if_configured()
    django.setup()

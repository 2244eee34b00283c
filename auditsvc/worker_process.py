"""Django in a spawned worker process (multiprocessing's "spawn": a fork would share the
parent's database connection). Free of model imports, so that a pool can name it as its
initializer before Django is set up in the child."""

from __future__ import annotations

import os


def setup_django(database_name: str | None = None) -> None:
    """Set Django up in this process, on database_name if given (the caller's: a test's, say)."""
    import django  # noqa: PLC0415

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "auditsvc.settings")
    from auditsvc.embedded_db import start_embedded_database_if_configured  # noqa: PLC0415

    start_embedded_database_if_configured()
    django.setup()
    if database_name:
        from django.db import connection  # noqa: PLC0415

        connection.settings_dict["NAME"] = database_name

"""Emptying tables past the append-only triggers, which only tests may do.

No setting of the service lets a session opt out of the triggers. Tests reset data the way a
PostgreSQL superuser can (and the service's role in production cannot): with
`session_replication_role = replica`, under which ordinary triggers do not fire.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection
from django.db.backends.base.base import BaseDatabaseWrapper


@contextmanager
def triggers_off(on: BaseDatabaseWrapper = connection) -> Iterator[None]:
    with on.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
    try:
        yield
    except BaseException:
        # In a transaction, the failed statement aborted it, and its rollback undoes the SET too.
        if not on.in_atomic_block:
            _triggers_on(on)
        raise
    _triggers_on(on)


def _triggers_on(on: BaseDatabaseWrapper) -> None:
    with on.cursor() as cursor:
        cursor.execute("SET session_replication_role = origin")


def truncate(*tables: str) -> None:
    with triggers_off(), connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")

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
from django.utils import timezone

from events.lifecycle import partitions


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


def drop_past_partitions() -> None:
    """Drop the partitions of months before this one: partitions outlive the rows a test's flush
    empties, and older (empty) months that other tests made would be retired by the next."""
    this_month = partitions.Month.of(timezone.now())
    with connection.cursor() as cursor:
        for partition in partitions.partitions():
            if partition.upper is not None and partition.upper <= this_month.lower:
                cursor.execute(f"DROP TABLE {partition.table}")
    partitions.forget_known()

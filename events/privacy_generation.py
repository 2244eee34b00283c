"""The privacy generation: one number in PostgreSQL (events_privacygeneration) that every change
of what is protected moves, in that change's own transaction: a schema registered, a type's
validation changed, a customer erased (bump). It is how every process learns of such a change
at once, without a time-based cache:

- schema checkers are cached for one generation only (events.schemas);
- the write path holds a shared lock on it for each write transaction and reads it
  (locked_generation); a bump takes the lock exclusively, so it waits for the writes in flight,
  and a write that starts later waits for the bump's commit and sees the new number: items
  checked under an older one are checked again;
- stream mode's accept compares it with the copy in Redis that the change publishes before it
  is answered (events.ingest.stream.announce_generation).
"""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.db import connection, transaction

# The lock is a transaction-level advisory lock, not the row's FOR SHARE: PostgreSQL queues a
# new shared request behind a waiting exclusive one (a row's share lockers would let a bump wait
# for as long as writes keep overlapping), and it writes nothing (a row lock dirties the page and
# its WAL in every write transaction). Shared by writes, exclusive for a bump, both until commit.
LOCK = 0x6175_6469_7467  # "auditg"
_SELECT = "SELECT generation FROM events_privacygeneration WHERE id = 1"
# Two statements in one round trip: the SELECT's snapshot is taken after the lock is granted, so
# it sees the bump that the lock waited for (one statement's snapshot would predate the wait).
SHARED_AND_READ = f"SELECT pg_advisory_xact_lock_shared({LOCK}); {_SELECT}"
# An upsert: a database whose row is gone (a test's flush) gets it back on the first change.
BUMP = (
    f"SELECT pg_advisory_xact_lock({LOCK}); "  # noqa: S608 - LOCK is this module's constant
    "INSERT INTO events_privacygeneration (id, generation) VALUES (1, nextval('events_privacygeneration_seq')) "
    "ON CONFLICT (id) DO UPDATE SET generation = EXCLUDED.generation RETURNING generation"
)
_RESTORE = (
    "INSERT INTO events_privacygeneration (id, generation) VALUES (1, nextval('events_privacygeneration_seq')) "
    "ON CONFLICT (id) DO NOTHING"
)

_lock = threading.Lock()
_known: tuple[float, int] | None = None  # (when read, the generation): committed values only


def bump() -> int:
    """Move the generation, in the caller's transaction (required): first in it, so that the
    lock order is the same in every change (the generation's lock, then what the change touches)."""
    assert connection.in_atomic_block, "a bump belongs to the change's own transaction"
    with connection.cursor() as cursor:
        cursor.execute(BUMP)
        cursor.nextset()
        (generation,) = cursor.fetchone()
    transaction.on_commit(lambda: _remember(int(generation)))
    return int(generation)


def locked_generation() -> int:
    """The generation, under the shared lock for the caller's (write) transaction: no change can
    commit before this transaction ends, and this one sees any change committed before it."""
    assert connection.in_atomic_block, "the shared lock lasts for the caller's transaction"
    with connection.cursor() as cursor:
        cursor.execute(SHARED_AND_READ)
        cursor.nextset()
        row = cursor.fetchone()
        if row is None:
            cursor.execute(_RESTORE)
            cursor.execute(_SELECT)
            row = cursor.fetchone()
    generation = int(row[0])
    transaction.on_commit(lambda: _remember(generation))
    return generation


def known_generation() -> int:
    """The generation as this process last saw it committed, read again when older than
    AUDITSVC_SCHEMA_CACHE_SECONDS (or never read). Raises the database's error when it must be
    read and cannot; the caller decides what a stale value may still serve."""
    known = _known
    if known is not None and time.monotonic() - known[0] < settings.AUDITSVC_SCHEMA_CACHE_SECONDS:
        return known[1]
    return read_generation()


def read_generation() -> int:
    """The committed generation, read now (outside a transaction; inside one it is only returned,
    not remembered, as it may be the transaction's own)."""
    with connection.cursor() as cursor:
        cursor.execute(_SELECT)
        row = cursor.fetchone()
    generation = int(row[0]) if row is not None else 0
    if connection.in_atomic_block:
        transaction.on_commit(lambda: _remember(generation))
    else:
        _remember(generation)
    return generation


def last_known_generation() -> int | None:
    """The generation this process last saw committed, however old; None before the first read."""
    known = _known
    return known[1] if known is not None else None


def read_again_soon() -> None:
    """The database did not answer (stream mode goes on with the last generation seen): read it
    again in a second, not on every request, each of which would wait for the connect timeout."""
    global _known  # noqa: PLW0603
    with _lock:
        if _known is not None:
            _known = (time.monotonic() - max(0, settings.AUDITSVC_SCHEMA_CACHE_SECONDS - 1), _known[1])


def _remember(generation: int) -> None:
    global _known  # noqa: PLW0603 - one value per process
    with _lock:
        # A later read may finish first (another thread): generations only grow.
        if _known is None or generation >= _known[1]:
            _known = (time.monotonic(), generation)


def forget_generation() -> None:
    global _known  # noqa: PLW0603
    with _lock:
        _known = None

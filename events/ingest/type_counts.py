"""Per-type event counts and last-seen times, kept off the ingest transaction.

Committed batches add to an in-process tally; the tally is written at most every
AUDITSVC_TYPE_COUNT_FLUSH_SECONDS, in its own transaction with an asynchronous commit, so
no ingest waits on the hot counter rows. A crash loses at most that window's increments
(statistics, not audit data); `manage.py rebuild_event_type_counts` recounts exactly.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction

_lock = threading.Lock()
_pending: dict[int, tuple[int, datetime]] = {}  # type id → (events, newest received_at)
_last_flush = time.monotonic()


def tally(type_ids: list[int], received_at: datetime) -> list[tuple[int, int, datetime]]:
    """[(type id, count, received_at)] for a batch's new events."""
    counts: dict[int, int] = {}
    for type_id in type_ids:
        counts[type_id] = counts.get(type_id, 0) + 1
    return [(type_id, count, received_at) for type_id, count in counts.items()]


def add(seen: list[tuple[int, int, datetime]]) -> None:
    """Record a committed batch; write the tally if it is due."""
    global _last_flush  # noqa: PLW0603 - process-wide tally
    with _lock:
        for type_id, count, received_at in seen:
            previous = _pending.get(type_id)
            _pending[type_id] = (
                (previous[0] + count, max(previous[1], received_at)) if previous else (count, received_at)
            )
        due = time.monotonic() - _last_flush >= settings.AUDITSVC_TYPE_COUNT_FLUSH_SECONDS
        if not due:
            return
        batch = sorted(_pending.items())  # sorted: one lock order for concurrent flushes
        _pending.clear()
        _last_flush = time.monotonic()
    _write(batch)


def flush() -> None:
    with _lock:
        batch = sorted(_pending.items())
        _pending.clear()
    if batch:
        _write(batch)


def _write(batch: list[tuple[int, tuple[int, datetime]]]) -> None:
    if not batch:
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit = off")
        cursor.execute(
            "UPDATE events_eventtype AS t SET event_count = t.event_count + c.n, "
            "last_seen_at = GREATEST(t.last_seen_at, c.seen) "
            "FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[]) AS c(id, n, seen) WHERE t.id = c.id",
            [[t for t, _ in batch], [n for _, (n, _) in batch], [seen for _, (_, seen) in batch]],
        )


def rebuild_event_type_counts() -> int:
    """Recount event_count and last_seen_at of every type from the events (a full scan)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 0")
        cursor.execute(
            "UPDATE events_eventtype AS t SET event_count = COALESCE(c.n, 0), last_seen_at = c.seen "
            "FROM events_eventtype AS t2 LEFT JOIN ("
            "  SELECT type_id, count(*) AS n, max(received_at) AS seen FROM events_event GROUP BY type_id"
            ") AS c ON c.type_id = t2.id WHERE t.id = t2.id"
        )
        return int(cursor.rowcount)


@atexit.register
def _flush_at_exit() -> None:
    with contextlib.suppress(Exception):  # best effort while the process ends
        flush()

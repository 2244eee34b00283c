"""Per-type event counts and last-seen times, and events per source, type and hour (the admin's
first page), kept off the ingest transaction.

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
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from events.lifecycle import partitions
from events.models import HOURLY_COUNT_DAYS

Seen = tuple[int, int, int, datetime]  # (source id, type id, events, received_at)
Hour = tuple[int, int, datetime]  # (source id, type id, hour)

_lock = threading.Lock()
_pending: dict[int, tuple[int, datetime]] = {}  # type id → (events, newest received_at)
_hourly: dict[Hour, int] = {}  # → events
_last_flush = time.monotonic()
_last_purge = 0.0
_PURGE_EVERY_SECONDS = 3600


def tally(source_id: int, type_ids: list[int], received_at: datetime) -> list[Seen]:
    """[(source id, type id, count, received_at)] for a batch's new events."""
    counts: dict[int, int] = {}
    for type_id in type_ids:
        counts[type_id] = counts.get(type_id, 0) + 1
    return [(source_id, type_id, count, received_at) for type_id, count in counts.items()]


def add(seen: list[Seen]) -> None:
    """Record a committed batch; write the tally if it is due."""
    global _last_flush  # noqa: PLW0603 - process-wide tally
    with _lock:
        for source_id, type_id, count, received_at in seen:
            previous = _pending.get(type_id)
            _pending[type_id] = (
                (previous[0] + count, max(previous[1], received_at)) if previous else (count, received_at)
            )
            hour = (source_id, type_id, received_at.replace(minute=0, second=0, microsecond=0))
            _hourly[hour] = _hourly.get(hour, 0) + count
        due = time.monotonic() - _last_flush >= settings.AUDITSVC_TYPE_COUNT_FLUSH_SECONDS
        if not due:
            return
        batch, hourly = _take()
        _last_flush = time.monotonic()
    _write(batch, hourly)


def flush() -> None:
    with _lock:
        batch, hourly = _take()
    if batch or hourly:
        _write(batch, hourly)


def _take() -> tuple[list[tuple[int, tuple[int, datetime]]], list[tuple[Hour, int]]]:
    batch = sorted(_pending.items())  # sorted: one lock order for concurrent flushes
    hourly = sorted(_hourly.items())
    _pending.clear()
    _hourly.clear()
    return batch, hourly


def _write(batch: list[tuple[int, tuple[int, datetime]]], hourly: list[tuple[Hour, int]]) -> None:
    global _last_purge  # noqa: PLW0603 - process-wide
    if not batch and not hourly:
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit = off")
        cursor.execute(
            "UPDATE events_eventtype AS t SET event_count = t.event_count + c.n, "
            "last_seen_at = GREATEST(t.last_seen_at, c.seen) "
            "FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[]) AS c(id, n, seen) WHERE t.id = c.id",
            [[t for t, _ in batch], [n for _, (n, _) in batch], [seen for _, (_, seen) in batch]],
        )
        cursor.execute(
            # Joined to the sources and types so that a row a restore took away (or a test's flush)
            # is skipped rather than failing the whole tally.
            "INSERT INTO events_hourlycount (source_id, type_id, hour, events) "
            "SELECT c.* FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[], %s::bigint[]) "
            "AS c(source_id, type_id, hour, events) JOIN events_source s ON s.id = c.source_id "
            "JOIN events_eventtype t ON t.id = c.type_id "
            "ON CONFLICT (source_id, type_id, hour) DO UPDATE SET events = events_hourlycount.events + EXCLUDED.events",
            [[h[0] for h, _ in hourly], [h[1] for h, _ in hourly], [h[2] for h, _ in hourly], [n for _, n in hourly]],
        )
        if time.monotonic() - _last_purge > _PURGE_EVERY_SECONDS:
            cursor.execute("DELETE FROM events_hourlycount WHERE hour < now() - make_interval(days => %s)",
                           [HOURLY_COUNT_DAYS])  # fmt: skip
            _last_purge = time.monotonic()


def rebuild_event_type_counts() -> int:
    """Recount event_count and last_seen_at of every type from the events (a full scan), and
    the hourly counts of the last HOURLY_COUNT_DAYS days."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 0")
        since = timezone.now() - timedelta(days=HOURLY_COUNT_DAYS)
        low, _ = partitions.id_bounds_for_received(since, None)  # prunes the older months
        cursor.execute("DELETE FROM events_hourlycount")
        cursor.execute(
            "INSERT INTO events_hourlycount (source_id, type_id, hour, events) "
            "SELECT source_id, type_id, date_trunc('hour', received_at), count(*) FROM events_event "
            "WHERE received_at >= %s AND id >= %s GROUP BY 1, 2, 3",
            [since, low],
        )
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

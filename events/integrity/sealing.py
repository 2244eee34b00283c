"""Seals (chained, signed Merkle roots over runs of events) and their verification.

Sealing follows commit order: ingest writes each event's id into events_pendingseal in the
event's own transaction; a sealer takes the committed rows, so no in-flight transaction
can land inside a seal that was already made, and every event is sealed exactly once.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone

from events.integrity import merkle, signing
from events.integrity.canonical import canonical_json
from events.integrity.hashing import format_time
from events.models import Seal

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
# pg_try_advisory_xact_lock key: one sealer at a time, across every process and host.
SEAL_LOCK = 0x5EA15EA1


def seal_document(seal: Seal) -> dict[str, Any]:
    """The fields a seal's hash covers (RFC 8785, like events)."""
    return {
        "sequence": seal.sequence,
        "created_at": format_time(seal.created_at),
        "event_count": seal.event_count,
        "first_received_at": format_time(seal.first_received_at),
        "last_received_at": format_time(seal.last_received_at),
        "merkle_root": seal.merkle_root,
        "previous_hash": seal.previous_hash,
    }


def seal_hash(seal: Seal) -> str:
    return hashlib.sha256(canonical_json(seal_document(seal))).hexdigest()


def seal_events(*, lag_seconds: int | None = None, max_events: int | None = None) -> list[Seal]:
    """Seal every committed, unsealed event older than the lag; several seals if many.

    Returns [] at once when another sealer holds the lock: concurrent runs never overlap.
    """
    if settings.PRODUCTION and signing.signing_key() is None:
        raise ImproperlyConfigured(
            "Production seals are signed, and this process has no AUDIT_SIGNING_KEY: "
            "run the sealer where the key is (manage.py seal_events --loop)."
        )
    lag = timedelta(seconds=settings.AUDITSVC_SEAL_LAG_SECONDS if lag_seconds is None else lag_seconds)
    limit = max_events or settings.AUDITSVC_SEAL_MAX_EVENTS
    seals: list[Seal] = []
    while True:
        seal = _seal_once(cutoff=timezone.now() - lag, limit=limit)
        if seal is None:
            return seals
        seals.append(seal)
        if seal.event_count < limit:
            return seals


def _seal_once(*, cutoff: datetime, limit: int) -> Seal | None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [SEAL_LOCK])
        if not cursor.fetchone()[0]:
            return None
        rows = _sealable(cursor, cutoff=cutoff, limit=limit)
        if not rows:
            return None
        previous = Seal.objects.order_by("-sequence").first()
        leaves = [merkle.leaf_hash(bytes.fromhex(row[1])) for row in rows]
        seal = Seal(
            sequence=(previous.sequence + 1) if previous else 1,
            created_at=timezone.now(),
            event_count=len(rows),
            first_received_at=rows[0][2],
            last_received_at=rows[-1][2],
            merkle_root=merkle.merkle_root(leaves).hex(),
            previous_hash=previous.hash if previous else GENESIS_HASH,
        )
        seal.hash = seal_hash(seal)
        seal.signature, seal.key_id = signing.sign(bytes.fromhex(seal.hash))
        seal.save(force_insert=True)
        raw_cursor: Any = cursor.cursor
        with raw_cursor.copy("COPY events_sealentry (event_id, seal_id, position, event_hash) FROM STDIN") as copy:
            for position, (event_id, hash_hex, _) in enumerate(rows):
                copy.write_row((event_id, seal.sequence, position, hash_hex))
        cursor.execute("DELETE FROM events_pendingseal WHERE event_id = ANY(%s)", [[row[0] for row in rows]])
        return seal


def _sealable(cursor: Any, *, cutoff: datetime, limit: int) -> list[tuple[Any, str, datetime]]:
    """(id, hash, received_at) of the oldest pending events, up to limit; rows whose events are
    gone are set aside on the way, so that they never fill the batch."""
    while True:
        cursor.execute(
            "SELECT event_id, received_at FROM events_pendingseal WHERE received_at < %s"
            " ORDER BY received_at, event_id LIMIT %s",
            [cutoff, limit],
        )
        pending = cursor.fetchall()
        if not pending:
            return []
        # The hashes by id, bounded by the batch's id range: a join would let the planner
        # hash all of events_event for a large batch; this reads only the partitions it needs.
        ids = [event_id for event_id, _ in pending]
        cursor.execute(
            "SELECT id, hash FROM events_event WHERE id = ANY(%s) AND id >= %s AND id <= %s",
            [ids, min(ids), max(ids)],
        )
        hashes = dict(cursor.fetchall())
        lost = [(event_id, received) for event_id, received in pending if event_id not in hashes]
        if not lost:
            return [(event_id, hashes[event_id], received) for event_id, received in pending]
        _set_aside(cursor, lost)


def _set_aside(cursor: Any, lost: list[tuple[Any, datetime]]) -> None:
    """Pending rows whose events are gone go to events_lostevent: a row and its event commit
    together, so such an event was acknowledged and then removed. Left in the queue, they
    would be read first by every run and, enough of them, stop sealing altogether."""
    logger.error("%d acknowledged events are gone before their seal: %s", len(lost), [str(i) for i, _ in lost[:20]])
    cursor.execute(
        "INSERT INTO events_lostevent (event_id, received_at, noticed_at) SELECT u.id, u.received, now()"
        " FROM unnest(%s::uuid[], %s::timestamptz[]) AS u(id, received) ON CONFLICT DO NOTHING",
        [[i for i, _ in lost], [r for _, r in lost]],
    )
    cursor.execute("DELETE FROM events_pendingseal WHERE event_id = ANY(%s)", [[i for i, _ in lost]])


def lost_events(limit: int = 20) -> tuple[int, list[str]]:
    """How many acknowledged events were gone before their seal, and the first of their ids."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM events_lostevent")
        (count,) = cursor.fetchone()
        cursor.execute("SELECT event_id::text FROM events_lostevent ORDER BY received_at, event_id LIMIT %s", [limit])
        return count, [event_id for (event_id,) in cursor.fetchall()]


def oldest_unsealed_age_seconds() -> float | None:
    """How long the oldest queued event has waited. A queue row dated in the future is not an
    event (the write path dates it at receipt): held_back_events reports those."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(received_at) FROM events_pendingseal WHERE received_at <= clock_timestamp()")
        oldest = cursor.fetchone()[0]
    return (timezone.now() - oldest).total_seconds() if oldest else None


def held_back_events(limit: int = 20) -> tuple[int, list[str]]:
    """Events queued for a seal at a time still to come (beyond a clock's skew): a row someone
    re-dated to keep its event from the sealer. How many, and the first ids."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT event_id::text, count(*) OVER () FROM events_pendingseal"
            " WHERE received_at > clock_timestamp() + interval '5 minutes' ORDER BY event_id LIMIT %s",
            [limit],
        )
        rows = cursor.fetchall()
    return (int(rows[0][1]) if rows else 0), [event_id for event_id, _ in rows]

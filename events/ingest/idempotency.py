"""Idempotency claims: one row per (source, key), held for the dedupe window or for good."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import connection
from django.utils import timezone

from auditsvc.errors import Conflict, FieldError
from events.ingest.validation import EventIn, ItemPaths
from events.models import IdempotencyKey, Source
from events.queries import StoredEvent, stored_events_by_id


def claim_idempotency_keys(
    *,
    source: Source,
    items: Sequence[EventIn],
    event_ids: list[uuid.UUID],
    now: datetime,
    paths: ItemPaths,
    results: dict[int, StoredEvent],
    permanent: bool,
) -> tuple[list[int], dict[int, int]]:
    """Claim each item's key. Returns the indexes to store, and in-batch repeats (index → first).

    Items whose key is already held (within the window) get the stored event in results.
    The unique (source, key) constraint settles races: a concurrent claim of the same key
    waits for the first transaction to end, then finds its row and returns that event.
    """
    first_index_of: dict[str, int] = {}
    fresh: list[int] = []
    repeats: dict[int, int] = {}
    legacy = _held_under_legacy_keys(source, items, paths, results)
    for index, item in enumerate(items):
        key = item.idempotency_key
        if index in legacy:
            continue
        if key is None:
            fresh.append(index)
        elif key in first_index_of:
            if items[first_index_of[key]].fingerprint != item.fingerprint:  # both keyed, the same way
                raise Conflict([key_conflict(paths(index, "idempotency_key"))])
            repeats[index] = first_index_of[key]
        else:
            first_index_of[key] = index
            fresh.append(index)
    if not first_index_of:
        return fresh, repeats

    keys = sorted(first_index_of)  # one lock order for every batch: no deadlocks between them
    cutoff = now - timedelta(seconds=settings.AUDITSVC_IDEMPOTENCY_WINDOW_SECONDS)
    with connection.cursor() as cursor:
        # Raw SQL: reclaiming expired keys (ON CONFLICT DO UPDATE ... WHERE) and returning the
        # keys actually claimed, in one statement; bulk_create can say neither.
        cursor.execute(
            """
            INSERT INTO events_idempotencykey (source_id, key, event_id, fingerprint, created_at, permanent)
            SELECT %s, k, e::uuid, f, %s, %s
            FROM ROWS FROM (json_array_elements_text(%s::json), json_array_elements_text(%s::json),
                            json_array_elements_text(%s::json)) AS t(k, e, f)
            ON CONFLICT (source_id, key) DO UPDATE
                SET event_id = EXCLUDED.event_id, fingerprint = EXCLUDED.fingerprint,
                    created_at = EXCLUDED.created_at, permanent = EXCLUDED.permanent
                WHERE events_idempotencykey.created_at < %s AND NOT events_idempotencykey.permanent
            RETURNING key
            """,
            [
                source.pk,
                now,
                permanent,
                # JSON arrays, not Python lists: orjson writes 5,000 keys faster than psycopg
                # quotes them one by one (client-side binding).
                _json_param(keys),
                _json_param([event_ids[first_index_of[k]] for k in keys]),
                _json_param([items[first_index_of[k]].fingerprint for k in keys]),
                cutoff,
            ],
        )
        claimed = {row[0] for row in cursor.fetchall()}
        taken = [k for k in keys if k not in claimed]
        if not taken:
            return fresh, repeats
        cursor.execute(
            "SELECT key, event_id, fingerprint FROM events_idempotencykey WHERE source_id = %s AND key = ANY(%s)",
            [source.pk, taken],
        )
        earlier = {key: (event_id, fingerprint) for key, event_id, fingerprint in cursor.fetchall()}
    stored = stored_events_by_id([event_id for event_id, _ in earlier.values()])
    taken_indexes = set()
    for key in taken:
        index = first_index_of[key]
        event_id, fingerprint = earlier[key]
        if event_id not in stored:  # imported keys are held for good; retention may take their event
            raise Conflict([key_retired(paths(index, "idempotency_key"), event_id)])
        if not _same_fingerprint(items[index], fingerprint) and not same_event(items[index], stored[event_id]):
            raise Conflict([key_conflict(paths(index, "idempotency_key"))])
        results[index] = replace(stored[event_id], created=False)
        taken_indexes.add(index)
    return [index for index in fresh if index not in taken_indexes], repeats


def _same_fingerprint(item: EventIn, held: str) -> bool:
    """held: a claim's fingerprint, keyed, or unkeyed from before fingerprints were keyed."""
    return held in (item.fingerprint, item.legacy_fingerprint)


def _held_under_legacy_keys(
    source: Source, items: Sequence[EventIn], paths: ItemPaths, results: dict[int, StoredEvent]
) -> set[int]:
    """Imported records whose key an earlier run derived the old way (SHA-256 of the record's
    bytes; import_identity.DerivedKeys): such a record is that stored event again (results)."""
    wanted = {item.legacy_key: index for index, item in enumerate(items) if item.legacy_key is not None}
    if not wanted:
        return set()
    held = dict(IdempotencyKey.objects.filter(source=source, key__in=list(wanted)).values_list("key", "event_id"))
    if not held:
        return set()
    stored = stored_events_by_id(list(held.values()))
    for key, event_id in held.items():
        index = wanted[key]
        if event_id not in stored:  # retired by retention: nothing is stored again under it
            raise Conflict([key_retired(paths(index, "idempotency_key"), event_id)])
        results[index] = replace(stored[event_id], created=False)
    return {wanted[key] for key in held}


def same_event(item: EventIn, stored: StoredEvent) -> bool:
    """Whether item, sent under a key already held, describes the stored event.

    The fingerprint (of the body as sent) settles it when both came the same way. The API and
    the importer write the same event differently (an export spells occurred_at out, a retry
    may leave it to the receipt time), so a differing fingerprint falls back to the fields:
    a re-imported export, or an API retry of an imported event, is a repeat, not a conflict.
    """
    if item.event_id is not None and item.event_id != stored.id:
        return False
    return (
        item.type == stored.type
        and item.customer == stored.customer
        and item.actor == stored.actor
        and item.description == stored.description
        and item.payload == stored.payload
        and item.origin == stored.origin
        and (item.occurred_at is None or item.occurred_at == stored.occurred_at)
    )


def _json_param(values: list[Any]) -> str:
    return orjson.dumps(values).decode()


def key_retired(field: str, event_id: uuid.UUID) -> FieldError:
    return FieldError(
        field,
        "idempotency_key_retired",
        f"This idempotency key belongs to event {event_id}, which is no longer stored (retired by retention): "
        "nothing is stored again under it.",
    )


def key_conflict(field: str) -> FieldError:
    return FieldError(
        field,
        "idempotency_key_reused",
        "This idempotency key is held by another event (for the dedupe window; for good if imported).",
    )


def purge_expired_idempotency_keys() -> int:
    """Delete key claims older than the dedupe window; the events themselves stay."""
    cutoff = timezone.now() - timedelta(seconds=settings.AUDITSVC_IDEMPOTENCY_WINDOW_SECONDS)
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff, permanent=False).delete()
    return deleted

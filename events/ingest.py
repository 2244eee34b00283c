"""The one write path. The API, the bulk import and the stream consumer all call ingest_events.

A batch is one transaction: claim idempotency keys, resolve types and customers in bulk,
COPY the events. Either every new event of the batch is stored, or none is.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from auditsvc.errors import Conflict, FieldError, InvalidInput
from events import type_counts
from events.ids import uuid7
from events.integrity import event_hash
from events.models import IdempotencyKey, Source
from events.queries import StoredEvent, stored_events_by_id
from events.validation import EventIn

# Process-wide caches of rows that are never deleted, filled only after commit so that a
# rolled-back batch cannot leave an id behind that does not exist.
_type_ids: dict[str, int] = {}
_customer_ids: dict[str, int] = {}
_CACHE_MAX = 200_000


@dataclass
class IngestResult:
    events: list[StoredEvent] = field(default_factory=list)

    @property
    def created(self) -> int:
        return sum(1 for event in self.events if event.created)

    @property
    def duplicates(self) -> int:
        return len(self.events) - self.created


def clear_caches() -> None:
    """Forget cached type and customer ids (tests that truncate tables call this)."""
    _type_ids.clear()
    _customer_ids.clear()


def ingest_events(
    *, source: Source, items: Sequence[EventIn], is_batch: bool = True, permanent_keys: bool = False
) -> IngestResult:
    """Store items for source, all or nothing; repeats of an idempotency key return the stored event.

    Keys are held for the dedupe window (AUDITSVC_IDEMPOTENCY_WINDOW_SECONDS), or for good
    with permanent_keys: import_events uses that, so that re-running a file months later
    still stores nothing twice.

    Raises InvalidInput (unknown type in strict mode) or Conflict (a key reused with another
    body, an identity owned by another customer); nothing is stored then. Error fields are
    named "events[i].<field>" for batches and "<field>" for a single event.
    """
    received_at = timezone.now()
    paths = _ItemPaths(is_batch)
    # Ids are assigned up front so that an idempotency claim can point at its event.
    event_ids = [item.event_id or uuid7() for item in items]
    results: dict[int, StoredEvent] = {}
    with transaction.atomic():
        fresh, repeats = _claim_idempotency_keys(
            source=source,
            items=items,
            event_ids=event_ids,
            now=received_at,
            paths=paths,
            results=results,
            permanent=permanent_keys,
        )
        fresh = _skip_imported_duplicates(
            source=source, items=items, fresh=fresh, now=received_at, paths=paths, results=results
        )
        type_ids = _resolve_event_types(items, fresh, paths)
        customer_ids = _resolve_customers([items[i].customer for i in fresh])
        _attach_identities(items, fresh, customer_ids, paths)
        rows = []
        for index in fresh:
            item = items[index]
            id_text = str(event_ids[index])  # once: UUID.__str__ is slow, and the hash and COPY need it
            stored = _new_event(source, item, event_ids[index], item.received_at or received_at, id_text)
            results[index] = stored
            rows.append(
                (
                    id_text,
                    type_ids[stored.type],
                    source.pk,
                    customer_ids[stored.customer] if stored.customer else None,
                    stored.actor,
                    stored.occurred_at,
                    stored.received_at,
                    stored.description,
                    orjson.dumps(stored.payload).decode(),
                    stored.idempotency_key,
                    stored.hash,
                )
            )
        if rows:
            _write_events(rows)
        seen = type_counts.tally([type_ids[items[i].type] for i in fresh], received_at)
        transaction.on_commit(lambda: _remember(type_ids, customer_ids))
        transaction.on_commit(lambda: type_counts.add(seen), robust=True)
    for index, first in repeats.items():
        results[index] = replace(results[first], created=False)
    return IngestResult(events=[results[index] for index in range(len(items))])


def _skip_imported_duplicates(
    *,
    source: Source,
    items: Sequence[EventIn],
    fresh: list[int],
    now: datetime,
    paths: _ItemPaths,
    results: dict[int, StoredEvent],
) -> list[int]:
    """Imported events that keep their id: one already stored is a repeat if identical
    (same hash), a conflict otherwise."""
    preset = {items[i].event_id: i for i in fresh if items[i].event_id is not None}
    if not preset:
        return fresh
    if len(preset) < sum(1 for i in fresh if items[i].event_id is not None):
        raise InvalidInput([FieldError(None, "duplicate_id", "The same event id appears twice in one batch.")])
    stored = stored_events_by_id(list(preset))  # type: ignore[arg-type]
    repeats = set()
    for event_id, event in stored.items():
        index = preset[event_id]
        wanted = _new_event(source, items[index], event_id, items[index].received_at or now)
        if wanted.hash != event.hash:
            raise Conflict([FieldError(paths(index, "id"), "id_conflict", "Another event with this id is stored.")])
        results[index] = replace(event, created=False)
        repeats.add(index)
    return [i for i in fresh if i not in repeats]


class _ItemPaths:
    """Error field names: "events[3].type" in a batch, "type" for a single event."""

    def __init__(self, is_batch: bool) -> None:
        self.is_batch = is_batch

    def __call__(self, index: int, name: str) -> str:
        return f"events[{index}].{name}" if self.is_batch else name


def hash_for(*, source: Source, item: EventIn, event_id: uuid.UUID | str, received_at: datetime) -> str:
    """The hash item gets when stored as event_id at received_at (occurred_at defaults to it)."""
    return event_hash(
        event_id=event_id,
        type_name=item.type,
        source_slug=source.slug,
        customer=item.customer,
        actor=item.actor,
        occurred_at=item.occurred_at or received_at,
        received_at=received_at,
        description=item.description,
        payload=item.payload,
        payload_is_canonical=item.payload_is_canonical,
    )


def _new_event(
    source: Source, item: EventIn, event_id: uuid.UUID, received_at: datetime, id_text: str | None = None
) -> StoredEvent:
    occurred_at = item.occurred_at or received_at
    return StoredEvent(
        id=event_id,
        type=item.type,
        source=source.slug,
        customer=item.customer,
        actor=item.actor,
        occurred_at=occurred_at,
        received_at=received_at,
        description=item.description,
        payload=item.payload,
        idempotency_key=item.idempotency_key,
        hash=hash_for(source=source, item=item, event_id=id_text or event_id, received_at=received_at),
    )


def _claim_idempotency_keys(
    *,
    source: Source,
    items: Sequence[EventIn],
    event_ids: list[uuid.UUID],
    now: datetime,
    paths: _ItemPaths,
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
    for index, item in enumerate(items):
        key = item.idempotency_key
        if key is None:
            fresh.append(index)
        elif key in first_index_of:
            if items[first_index_of[key]].fingerprint != item.fingerprint:
                raise Conflict([_key_conflict(paths(index, "idempotency_key"))])
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
        if fingerprint != items[index].fingerprint:
            raise Conflict([_key_conflict(paths(index, "idempotency_key"))])
        results[index] = replace(stored[event_id], created=False)
        taken_indexes.add(index)
    return [index for index in fresh if index not in taken_indexes], repeats


def _json_param(values: list[Any]) -> str:
    return orjson.dumps(values).decode()


def _key_conflict(field: str) -> FieldError:
    return FieldError(
        field,
        "idempotency_key_reused",
        "This idempotency key was already used for a different event within the dedupe window.",
    )


def _resolve_event_types(items: Sequence[EventIn], fresh: list[int], paths: _ItemPaths) -> dict[str, int]:
    """name → id for every type, registering new ones (unless strict)."""
    wanted = sorted({items[i].type for i in fresh})
    resolved = {name: _type_ids[name] for name in wanted if name in _type_ids}
    missing = [name for name in wanted if name not in resolved]
    if not missing:
        return resolved
    with connection.cursor() as cursor:
        if not settings.AUDITSVC_STRICT_EVENT_TYPES:
            cursor.execute(
                "INSERT INTO events_eventtype (name, description) SELECT unnest(%s::text[]), '' "
                "ON CONFLICT (name) DO NOTHING",
                [missing],
            )
        cursor.execute("SELECT name, id FROM events_eventtype WHERE name = ANY(%s)", [missing])
        resolved.update(cursor.fetchall())
    unknown = [
        FieldError(
            paths(i, "type"),
            "unknown_event_type",
            f"Event type '{items[i].type}' is not registered and this deployment is strict.",
        )
        for i in fresh
        if items[i].type not in resolved
    ]
    if unknown:
        raise InvalidInput(unknown)
    return resolved


def _resolve_customers(external_ids: list[str | None]) -> dict[str, int]:
    """external id → customer id, creating unknown customers in one statement."""
    wanted = sorted({external_id for external_id in external_ids if external_id})
    resolved = {external_id: _customer_ids[external_id] for external_id in wanted if external_id in _customer_ids}
    missing = [external_id for external_id in wanted if external_id not in resolved]
    if not missing:
        return resolved
    with connection.cursor() as cursor:
        # Sorted input: concurrent batches lock the unique index in the same order.
        # Two statements, not a CTE: the SELECT must see rows a concurrent batch committed
        # while this INSERT waited on them (a new snapshot per statement).
        cursor.execute(
            "INSERT INTO customers_customer (external_id, email, display_name) "
            "SELECT unnest(%s::text[]), '', '' ON CONFLICT (external_id) DO NOTHING",
            [missing],
        )
        cursor.execute("SELECT external_id, id FROM customers_customer WHERE external_id = ANY(%s)", [missing])
        resolved.update(cursor.fetchall())
    return resolved


def _attach_identities(
    items: Sequence[EventIn], fresh: list[int], customer_ids: dict[str, int], paths: _ItemPaths
) -> None:
    """Attach each item's identities to its customer; an identity owned by another is a 409."""
    wanted: dict[tuple[str, str], tuple[int, int]] = {}  # identity → (customer id, item index)
    for index in fresh:
        item = items[index]
        for identity in item.customer_identities:
            assert item.customer is not None  # validation requires a customer for identities
            owner = customer_ids[item.customer]
            if wanted.setdefault(identity, (owner, index))[0] != owner:
                raise Conflict([_identity_conflict(paths(index, "customer_identities"), identity)])
    if not wanted:
        return
    identities = sorted(wanted)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO customers_customeridentity (customer_id, system, external_id) "
            "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[]) "
            "ON CONFLICT (system, external_id) DO NOTHING",
            [[wanted[i][0] for i in identities], [s for s, _ in identities], [e for _, e in identities]],
        )
        cursor.execute(
            "SELECT system, external_id, customer_id FROM customers_customeridentity "
            "WHERE (system, external_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            [[s for s, _ in identities], [e for _, e in identities]],
        )
        owners = {(system, external_id): owner for system, external_id, owner in cursor.fetchall()}
    for identity in identities:
        owner, index = wanted[identity]
        if owners.get(identity) != owner:
            raise Conflict([_identity_conflict(paths(index, "customer_identities"), identity)])


def _identity_conflict(field: str, identity: tuple[str, str]) -> FieldError:
    return FieldError(
        field,
        "identity_conflict",
        f"Identity {identity[0]}:{identity[1]} already belongs to another customer.",
    )


# Up to this many rows, one INSERT statement (one round trip) beats two COPYs (four).
_INSERT_MAX_ROWS = 20
EVENT_COLUMNS = (
    "id, type_id, source_id, customer_id, actor, occurred_at, received_at, description, payload, idempotency_key, hash"
)


def _write_events(rows: list[tuple[Any, ...]]) -> None:
    """Store the rows in events_event and queue them for the sealer (events.sealing), in the
    caller's transaction: COPY for batches, the fastest bulk path PostgreSQL offers; a single
    INSERT ... RETURNING feeding the queue for a few rows, where round trips dominate."""
    with connection.cursor() as cursor:
        if len(rows) <= _INSERT_MAX_ROWS:
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s)"] * len(rows))
            cursor.execute(
                # S608: only placeholders and the column constant are spliced in.
                f"WITH stored AS (INSERT INTO events_event ({EVENT_COLUMNS}) VALUES {values} "  # noqa: S608
                "RETURNING id, received_at) "
                "INSERT INTO events_pendingseal (event_id, received_at) SELECT * FROM stored",
                [value for row in rows for value in row],
            )
            return
        raw_cursor: Any = cursor.cursor  # the psycopg cursor; Django's wrapper has no copy()
        events_text, pending_text = copy_texts(rows)
        with raw_cursor.copy(f"COPY events_event ({EVENT_COLUMNS}) FROM STDIN") as copy:
            copy.write(events_text)
        with raw_cursor.copy("COPY events_pendingseal (event_id, received_at) FROM STDIN") as copy:
            copy.write(pending_text)


# COPY text format: backslash, tab, newline and carriage return are escaped; \N is NULL.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str | int | None) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, int):  # customer_id
        return str(value)
    if "\\" in value or not value.isprintable():  # isprintable() is False for tab, newline, CR
        return value.translate(_COPY_ESCAPES)
    return value


def copy_texts(rows: list[tuple[Any, ...]]) -> tuple[str, str]:
    """The COPY text of events_event rows (columns EVENT_COLUMNS), and of their events_pendingseal
    rows: formatted here by column type in one pass, several times cheaper than write_row()."""
    events: list[str] = []
    pending: list[str] = []
    last_received: datetime | None = None
    received_text = ""
    for event_id, type_id, source_id, customer_id, actor, occurred, received, description, payload, key, digest in rows:
        if received is not last_received:  # usually one receipt time for the whole batch
            last_received, received_text = received, received.isoformat()
        events.append(
            f"{event_id}\t{type_id}\t{source_id}\t{_copy_text(customer_id)}\t{_copy_text(actor)}\t"
            f"{occurred.isoformat()}\t{received_text}\t{_copy_text(description)}\t{_copy_json(payload)}\t"
            f"{_copy_text(key)}\t{digest}\n"
        )
        pending.append(f"{event_id}\t{received_text}\n")
    return "".join(events), "".join(pending)


def _copy_json(text: str) -> str:
    # orjson's text: control characters come escaped in it, backslashes do not.
    return text.replace("\\", "\\\\") if "\\" in text else text


def _remember(type_ids: dict[str, int], customer_ids: dict[str, int]) -> None:
    if len(_type_ids) + len(type_ids) > _CACHE_MAX:
        _type_ids.clear()
    if len(_customer_ids) + len(customer_ids) > _CACHE_MAX:
        _customer_ids.clear()
    _type_ids.update(type_ids)
    _customer_ids.update(customer_ids)


def purge_expired_idempotency_keys() -> int:
    """Delete key claims older than the dedupe window; the events themselves stay."""
    cutoff = timezone.now() - timedelta(seconds=settings.AUDITSVC_IDEMPOTENCY_WINDOW_SECONDS)
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff, permanent=False).delete()
    return deleted

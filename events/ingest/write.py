"""The one write path. The API, the bulk import and the stream consumer all call ingest_events.

A batch is one transaction: claim idempotency keys, resolve types and customers in bulk,
COPY the events. Either every new event of the batch is stored, or none is.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime

import orjson
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from psycopg import errors

from auditsvc.errors import Conflict, FieldError, InvalidInput, ProblemError
from events import privacy_generation, protection, schemas
from events.ids import uuid7
from events.ingest import type_counts
from events.ingest.copy import write_events
from events.ingest.idempotency import claim_idempotency_keys
from events.ingest.import_identity import derived_key
from events.ingest.validation import SERVICE_TYPE_PREFIX, EventIn, ItemPaths, errors_of_item, failed_items
from events.integrity.hashing import event_hash
from events.lifecycle import partitions
from events.lifecycle.partitions import RETIRING_CONSTRAINT
from events.models import SERVICE_SOURCE, Source
from events.queries import StoredEvent, stored_events_by_id

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
    try:
        return _ingest_once(source=source, items=items, is_batch=is_batch, permanent_keys=permanent_keys)
    except IntegrityError as exc:
        if not _worth_retrying(exc):
            raise
    # Once more, from the database's own state: the cached type and customer ids may name rows
    # a restore or failover took away (a foreign-key violation at commit), or another batch
    # stored an imported event's id in the meantime (its repeat is found this time).
    clear_caches()
    return _ingest_once(source=source, items=items, is_batch=is_batch, permanent_keys=permanent_keys)


def ingest_each(
    *, source: Source, items: Sequence[EventIn], permanent_keys: bool = False
) -> list[StoredEvent | ProblemError]:
    """Store independent items together, except those the write path refuses: each of those
    gets its own error, named as for that item alone, and the rest are stored without it.
    For the import's records and the group commit's requests, where one bad item must not
    fail the others (a batch POST stays all or nothing: ingest_events)."""
    outcomes: list[StoredEvent | ProblemError | None] = [None] * len(items)
    pending = list(range(len(items)))
    while pending:
        try:
            result = ingest_events(
                source=source, items=[items[i] for i in pending], is_batch=True, permanent_keys=permanent_keys
            )
        except ProblemError as exc:
            refused = failed_items(exc.errors) or ({0} if len(pending) == 1 else set())
            if not refused:  # about the batch, not one item: find out item by item
                for i in pending:
                    outcomes[i] = ingest_each(source=source, items=[items[i]], permanent_keys=permanent_keys)[0]
                break
            for n in refused:
                outcomes[pending[n]] = type(exc)(errors_of_item(exc.errors, n), status=exc.status)
            pending = [i for n, i in enumerate(pending) if n not in refused]
            continue
        for i, stored in zip(pending, result.events, strict=True):
            outcomes[i] = stored
        break
    assert all(outcome is not None for outcome in outcomes)
    return outcomes  # type: ignore[return-value]


def _worth_retrying(exc: IntegrityError) -> bool:
    cause = exc.__cause__
    if isinstance(cause, errors.ForeignKeyViolation):
        return True
    if isinstance(cause, errors.CheckViolation) and "no partition" in str(cause):
        partitions.forget_known()  # dropped by retention in another process, or never made
        return True
    return isinstance(cause, errors.UniqueViolation) and cause.diag.constraint_name == "events_event_pkey"


def _ingest_once(*, source: Source, items: Sequence[EventIn], is_batch: bool, permanent_keys: bool) -> IngestResult:
    received_at = timezone.now()
    paths = ItemPaths(is_batch)
    # Ids are assigned up front so that an idempotency claim can point at its event.
    event_ids = [item.event_id or uuid7(received_at) for item in items]  # of the instant it is received
    retired = partitions.ensure_partitions(partitions.months_of(event_ids)).retired
    if retired:
        _refuse_retired(event_ids, retired, paths)
    # Checked before the transaction (its locks are held for as short as can be), as of the
    # generation last seen; checked again inside it if a change has committed since.
    generation = privacy_generation.known_generation()
    sent = items
    items, checks = checked_and_protected(sent, paths, source=source, event_ids=event_ids, generation=generation)
    results: dict[int, StoredEvent] = {}
    with _writes_into_retiring_months_refused(event_ids, paths), transaction.atomic():
        # First in the transaction: from here until the commit no registration or erasure can
        # commit (its bump waits on this share lock), so what was checked is what is in force.
        locked = privacy_generation.locked_generation()
        if locked != generation:
            items, checks = checked_and_protected(sent, paths, source=source, event_ids=event_ids, generation=locked)
        fresh, repeats = claim_idempotency_keys(
            source=source,
            items=items,
            event_ids=event_ids,
            now=received_at,
            paths=paths,
            results=results,
            permanent=permanent_keys,
        )
        built: dict[int, StoredEvent] = {}  # imported events, hashed once by _skip_imported_duplicates
        fresh = _skip_imported_duplicates(
            source=source, items=items, fresh=fresh, now=received_at, paths=paths, results=results, repeats=repeats,
            built=built,
        )  # fmt: skip
        type_ids = _resolve_event_types(source, items, fresh, paths)
        customer_ids = _resolve_customers([items[i].customer for i in fresh])
        _attach_identities(items, fresh, customer_ids, paths)
        rows = []
        for index in fresh:
            item = items[index]
            id_text = str(event_ids[index])  # once: UUID.__str__ is slow, and the hash and COPY need it
            stored = built.get(index) or _new_event(source, item, event_ids[index], received_at, id_text)
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
                    checks[index].version,
                    checks[index].valid,
                    stored.origin,
                )
            )
        if rows:
            write_events(rows)
        seen = type_counts.tally(source.pk, [type_ids[items[i].type] for i in fresh], received_at)
        transaction.on_commit(lambda: _remember(type_ids, customer_ids))
        transaction.on_commit(lambda: type_counts.add(seen), robust=True)
        flagged = Counter(items[i].type for i in fresh if checks[i].valid is False)
        if flagged:
            transaction.on_commit(lambda: schemas.count_violations(flagged), robust=True)
    for index, first in repeats.items():
        results[index] = replace(results[first], created=False)
    return IngestResult(events=[results[index] for index in range(len(items))])


def checked_and_protected(
    items: Sequence[EventIn],
    paths: ItemPaths,
    *,
    source: Source,
    event_ids: Sequence[uuid.UUID],
    generation: int | None,
) -> tuple[list[EventIn], list[schemas.Check]]:
    """The items as they are to be hashed and stored as event_ids, and their schema checks: a
    sender's string that looks protected refused (the log's own records hold HMACs it made), then
    checked against their schemas as of the privacy generation (enforce mode: 400
    schema_violation, nothing stored), then their marked fields protected. The write path and the
    stream's accept both call it, before they hash."""
    # An import claims an export by its hash; it is one only if its marked fields are protected
    # by the marks in force now (a mark registered a moment ago included).
    items = [
        replace(item, proven_export=protection.in_stored_form(item.payload, item.type, generation=generation))
        if item.proven_export
        else item
        for item in items
    ]
    if source.slug != SERVICE_SOURCE:
        protection.refuse_protected_prefixes(items, paths)
    checks = schemas.check_items(items, paths, generation=generation)
    protected = protection.protect_items(items, checks, paths, source=source.slug, event_ids=event_ids)
    return [_with_derived_key(item) for item in protected], checks


def _with_derived_key(item: EventIn) -> EventIn:
    """An imported record without a key of its own gets one of its fingerprint, which is keyed
    and (for marked fields) of the protected form: known only now."""
    if item.derived_key_repeat is None or item.idempotency_key is not None:
        return item
    return replace(item, idempotency_key=derived_key(item.fingerprint, item.derived_key_repeat))


def _refuse_retired(event_ids: list[uuid.UUID], retired: set[partitions.Month], paths: ItemPaths) -> None:
    errors = []
    for index, event_id in enumerate(event_ids):
        month = partitions.Month.of_id(event_id)
        if month in retired:
            message = f"Events received in {month} are retired by retention; none is stored again."
            errors.append(FieldError(paths(index, "received_at"), "retention_expired", message))
    raise InvalidInput(errors)


@contextmanager
def _writes_into_retiring_months_refused(event_ids: list[uuid.UUID], paths: ItemPaths) -> Iterator[None]:
    """A row for a partition that retention has closed (partitions.refuse_writes) fails its
    CHECK: the items of that partition's range are refused as retired, the others unharmed."""
    try:
        yield
    except IntegrityError as exc:
        cause = exc.__cause__
        if not (isinstance(cause, errors.CheckViolation) and cause.diag.constraint_name == RETIRING_CONSTRAINT):
            raise
        closed = next((p for p in partitions.partitions() if p.table == cause.diag.table_name), None)
        if closed is not None:
            low, high = closed.id_range()
            months = {partitions.Month.of_id(i) for i in event_ids if low <= i < high}
        else:  # retention dropped it since the CHECK refused the row: its month is recorded retired
            partitions.forget_known()
            months = partitions.retired_months({partitions.Month.of_id(i) for i in event_ids})
        if not months:
            raise
        _refuse_retired(event_ids, months, paths)


def _skip_imported_duplicates(
    *,
    source: Source,
    items: Sequence[EventIn],
    fresh: list[int],
    now: datetime,
    paths: ItemPaths,
    results: dict[int, StoredEvent],
    repeats: dict[int, int],
    built: dict[int, StoredEvent],
) -> list[int]:
    """Imported events that keep their id: one already stored, or met earlier in the batch,
    is a repeat if identical (same hash); otherwise that record alone is refused. Each is
    built (and hashed) once, into built."""
    preset: dict[uuid.UUID, int] = {}
    wanted = built
    for index in fresh:
        event_id = items[index].event_id
        if event_id is None:
            continue
        wanted[index] = _new_event(source, items[index], event_id, now)
        first = preset.setdefault(event_id, index)
        if first == index:
            continue
        if wanted[first].hash != wanted[index].hash:
            raise InvalidInput(
                [FieldError(paths(index, "id"), "duplicate_id", "Another event of this batch has this id.")]
            )
        repeats[index] = first
    if not preset:
        return fresh
    taken = set(repeats)
    for event_id, event in stored_events_by_id(list(preset)).items():
        index = preset[event_id]
        if wanted[index].hash != event.hash:
            raise Conflict([FieldError(paths(index, "id"), "id_conflict", "Another event with this id is stored.")])
        results[index] = replace(event, created=False)
        taken.add(index)
    return [i for i in fresh if i not in taken]


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
        origin=item.origin,
        payload_is_canonical=item.payload_is_canonical,
    )


def _new_event(
    source: Source, item: EventIn, event_id: uuid.UUID, now: datetime, id_text: str | None = None
) -> StoredEvent:
    """The event item becomes when stored now (or at its own receipt time, an import's)."""
    received_at = item.received_at or now
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
        hash=item.hash or hash_for(source=source, item=item, event_id=id_text or event_id, received_at=received_at),
        origin=item.origin,
    )


def _resolve_event_types(
    source: Source, items: Sequence[EventIn], fresh: list[int], paths: ItemPaths
) -> dict[str, int]:
    """name → id for every type, registering new ones (unless strict: then only the log's own,
    which it writes itself, so that erasures and schema registrations are recorded there too)."""
    wanted = sorted({items[i].type for i in fresh})
    resolved = {name: _type_ids[name] for name in wanted if name in _type_ids}
    missing = [name for name in wanted if name not in resolved]
    if not missing:
        return resolved
    if settings.AUDITSVC_STRICT_EVENT_TYPES:
        own = source.slug == SERVICE_SOURCE
        registering = [name for name in missing if own and name.startswith(SERVICE_TYPE_PREFIX)]
    else:
        registering = missing
    with connection.cursor() as cursor:
        if registering:
            cursor.execute(
                "INSERT INTO events_eventtype (name, description, owner_id) SELECT unnest(%s::text[]), '', %s "
                "ON CONFLICT (name) DO NOTHING",
                [registering, source.pk],
            )
        # The first source to send a type owns it (its schema keys register the type's schemas),
        # unless staff named one; in this transaction, so a refused write claims nothing.
        cursor.execute(
            "UPDATE events_eventtype SET owner_id = %s WHERE name = ANY(%s) AND owner_id IS NULL", [source.pk, missing]
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
    items: Sequence[EventIn], fresh: list[int], customer_ids: dict[str, int], paths: ItemPaths
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


def _remember(type_ids: dict[str, int], customer_ids: dict[str, int]) -> None:
    if len(_type_ids) + len(type_ids) > _CACHE_MAX:
        _type_ids.clear()
    if len(_customer_ids) + len(customer_ids) > _CACHE_MAX:
        _customer_ids.clear()
    _type_ids.update(type_ids)
    _customer_ids.update(customer_ids)

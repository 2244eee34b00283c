"""The read path: plain functions returning events as plain values."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.postgres.search import SearchQuery, SearchVector
from django.db.models import F, Func, Q, QuerySet, TextField

from auditsvc.times import parse_rfc3339
from customers.queries import customer_ids_for
from events.lifecycle import partitions
from events.models import Event, EventType, SealEntry, Source


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as stored; created is False when an idempotent retry returned an earlier event."""

    id: uuid.UUID
    type: str
    source: str
    customer: str | None
    actor: str | None
    occurred_at: datetime
    received_at: datetime
    description: str | None
    payload: dict[str, Any]
    idempotency_key: str | None
    hash: str
    origin: str | None = None
    created: bool = True


def stored_event_from_row(event: Event) -> StoredEvent:
    """An Event loaded with select_related("type", "source", "customer") as a StoredEvent."""
    return StoredEvent(
        id=event.id,
        type=event.type.name,
        source=event.source.slug,
        customer=event.customer.external_id if event.customer else None,
        actor=event.actor,
        occurred_at=event.occurred_at,
        received_at=event.received_at,
        description=event.description,
        payload=event.payload,
        idempotency_key=event.idempotency_key,
        hash=event.hash,
        origin=event.origin,
    )


# The UTC text format of format_time (events.integrity.hashing), in SQL: 2026-11-24T04:21:00.123456Z.
_UTC_TEXT = """to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


def utc_text(name: str) -> Func:
    return Func(F(name), template=_UTC_TEXT, output_field=TextField())


def text_of(name: str) -> Func:
    return Func(F(name), template="%(expressions)s::text", output_field=TextField())


# An event's fields as PostgreSQL formats them, in the order the API and the export write them
# (events.api.serializers.event_output): the read path's rows and the export's lines are these.
EVENT_COLUMNS: dict[str, Any] = {
    "id": text_of("id"), "type": F("type__name"), "source": F("source__slug"), "customer": F("customer__external_id"),
    "actor": F("actor"), "occurred_at": utc_text("occurred_at"), "received_at": utc_text("received_at"),
    "description": F("description"), "payload": F("payload"), "idempotency_key": F("idempotency_key"),
    "hash": F("hash"), "origin": F("origin"),
}  # fmt: skip
EVENT_FIELDS = tuple(EVENT_COLUMNS)
PAYLOAD = EVENT_FIELDS.index("payload")
EventRow = tuple[Any, ...]  # EVENT_FIELDS' values, all text (the payload its JSON text) or None


def event_rows(events: QuerySet[Event]) -> QuerySet[Any]:
    """events as EventRows: every value already text, so that no model, UUID or datetime is
    built per row (most of a page's cost before), and the payload as its JSON text, which
    orjson reads far faster than the stdlib decoder the ORM's JSONField uses."""
    return events.values_list(*{**EVENT_COLUMNS, "payload": text_of("payload")}.values())


# An ordering's attribute (auditsvc.api.pagination.Ordering.attributes) → the row's field of it.
_ROW_FIELD = {"id": "id", "type__name": "type", "occurred_at": "occurred_at", "received_at": "received_at"}
_TIMES = frozenset({"occurred_at", "received_at"})


def row_position(row: EventRow, attribute: str) -> Any:
    """An EventRow's value of an ordering attribute for a cursor, as the model has it (the
    times as datetimes again: a cursor carries them in Python's ISO form)."""
    value = row[EVENT_FIELDS.index(_ROW_FIELD[attribute])]
    return parse_rfc3339(value) if attribute in _TIMES else value


def stored_events_by_id(ids: list[uuid.UUID]) -> dict[uuid.UUID, StoredEvent]:
    """Events by id, in one query."""
    events = Event.objects.select_related("type", "source", "customer").filter(id__in=ids)
    return {event.id: stored_event_from_row(event) for event in events}


def event_type_ids(*, names: list[str] | None = None, prefix: str | None = None) -> list[int]:
    """Ids of the named types (or of those starting with prefix); resolved first so that the
    planner sees constants and picks the (type_id, occurred_at) index."""
    types = EventType.objects.all()
    if names is not None:
        types = types.filter(name__in=names)
    if prefix is not None:
        types = types.filter(name__startswith=prefix)
    return list(types.values_list("id", flat=True))


def source_ids(slugs: list[str]) -> list[int]:
    return list(Source.objects.filter(slug__in=slugs).values_list("id", flat=True))


def occurred_id_floor(after: datetime) -> uuid.UUID:
    """The least id an event occurring at or after `after` can have (see partitions)."""
    skew = timedelta(seconds=settings.AUDITSVC_MAX_FUTURE_SKEW_SECONDS)
    return partitions.id_floor_for_occurred(after, skew)


def within_partitions(
    events: QuerySet[Event],
    *,
    occurred_after: datetime | None = None,
    received_after: datetime | None = None,
    received_before: datetime | None = None,
) -> QuerySet[Event]:
    """events, also bounded on id as the time filters imply, so that the planner reads only
    the partitions that can hold a match (the results are the same)."""
    lower, upper = partitions.id_bounds_for_received(received_after, received_before)
    if occurred_after is not None:
        floor = occurred_id_floor(occurred_after)
        lower = max(lower, floor) if lower is not None else floor
    if lower is not None:
        events = events.filter(id__gte=lower)
    if upper is not None:
        events = events.filter(id__lt=upper)
    return events


def events_queryset() -> QuerySet[Event]:
    """Events with what their output needs, joined in the one query."""
    return Event.objects.select_related("type", "source", "customer")


def event_by_id(event_id: str) -> EventRow | None:
    """The event of an id (any text: None when it is no UUID), as an EventRow."""
    try:
        parsed = uuid.UUID(event_id)
    except ValueError:
        return None
    row: EventRow | None = event_rows(Event.objects.filter(id=parsed)).first()
    return row


def search_events(queryset: QuerySet[Event], term: str) -> QuerySet[Event]:
    """The admin's search box: an event id exactly, else any of customer (external id or
    system:id), actor, or words of the description; each served by its own index."""
    term = term.strip()
    if not term:
        return queryset
    if "\x00" in term:
        return queryset.none()
    try:
        return queryset.filter(id=uuid.UUID(term))
    except ValueError:
        pass
    condition = Q(actor=term) | Q(description_search=SearchQuery(term, config="simple", search_type="websearch"))
    customers = customer_ids_for(term, any_system=True)
    if customers:
        condition |= Q(customer_id__in=customers)
    return queryset.annotate(description_search=SearchVector("description", config="simple")).filter(condition)


def seal_position(event_id: uuid.UUID) -> tuple[int, int] | None:
    """(seal sequence, position) of a sealed event, or None while it waits for the sealer."""
    entry = SealEntry.objects.filter(event_id=event_id).values_list("seal_id", "position").first()
    return (entry[0], entry[1]) if entry else None

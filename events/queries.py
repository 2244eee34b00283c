"""The read path: plain functions returning events as plain values."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events.models import Event


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
    )


def stored_events_by_id(ids: list[uuid.UUID]) -> dict[uuid.UUID, StoredEvent]:
    """Events by id, in one query."""
    events = Event.objects.select_related("type", "source", "customer").filter(id__in=ids)
    return {event.id: stored_event_from_row(event) for event in events}

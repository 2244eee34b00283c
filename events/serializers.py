"""Output shapes of the events API (input is validated by events.validation)."""

from __future__ import annotations

from typing import Any

from events.integrity import format_time
from events.queries import StoredEvent


def event_output(event: StoredEvent) -> dict[str, Any]:
    """An event as the API returns it; times in the same RFC 3339 form the hash uses."""
    return {
        "id": str(event.id),
        "type": event.type,
        "source": event.source,
        "customer": event.customer,
        "actor": event.actor,
        "occurred_at": format_time(event.occurred_at),
        "received_at": format_time(event.received_at),
        "description": event.description,
        "payload": event.payload,
        "idempotency_key": event.idempotency_key,
        "hash": event.hash,
    }

"""Event hashes: SHA-256 over the RFC 8785 (JCS) canonical JSON of the event's envelope.

The envelope, documented in docs/integrity.md so anyone can recompute it:
    {"actor", "customer", "description", "id", "occurred_at", "payload",
     "received_at", "source", "type"}
with times as RFC 3339 UTC strings with microseconds ("2026-11-24T04:21:00.123456Z"),
`customer` the customer's external id, `source` the source slug, `type` the type name,
and absent optional values as null. The idempotency key is transport, not content.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import rfc8785


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_envelope(
    *,
    event_id: uuid.UUID,
    type_name: str,
    source_slug: str,
    customer: str | None,
    actor: str | None,
    occurred_at: datetime,
    received_at: datetime,
    description: str | None,
    payload: dict[str, Any],
) -> bytes:
    """The RFC 8785 bytes that an event's hash is taken over."""
    return rfc8785.dumps(
        {
            "id": str(event_id),
            "type": type_name,
            "source": source_slug,
            "customer": customer,
            "actor": actor,
            "occurred_at": format_time(occurred_at),
            "received_at": format_time(received_at),
            "description": description,
            "payload": payload,
        }
    )


def event_hash(**envelope: Any) -> str:
    """Hex SHA-256 of canonical_envelope(**envelope)."""
    return hashlib.sha256(canonical_envelope(**envelope)).hexdigest()

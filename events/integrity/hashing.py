"""Event hashes: SHA-256 over the RFC 8785 (JCS) canonical JSON of the event's envelope.

The envelope, documented in docs/integrity.md so anyone can recompute it:
    {"actor", "customer", "description", "id", "occurred_at", "payload",
     "received_at", "source", "type"}
with times as RFC 3339 UTC strings with microseconds ("2026-11-24T04:21:00.123456Z"),
`customer` the customer's external id, `source` the source slug, `type` the type name,
and absent optional values as null. The idempotency key is transport, not content.
An event with an `origin` (a CloudEvents source) has it as a tenth field; one without has no
such field, so that the hashes of events stored before origins existed are unchanged.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from events.integrity.canonical import canonical_json


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds: 2026-11-24T04:21:00.123456Z."""
    text = value.isoformat(timespec="microseconds")
    if text.endswith("+00:00"):  # the usual case: a UTC datetime, as PostgreSQL returns them
        return text[:-6] + "Z"
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def envelope(  # noqa: PLR0917 - positional on purpose, see the docstring
    event_id: uuid.UUID | str,
    type_name: str,
    source_slug: str,
    customer: str | None,
    actor: str | None,
    occurred_at: datetime,
    received_at: datetime,
    description: str | None,
    payload: dict[str, Any],
    origin: str | None = None,
    /,
) -> dict[str, Any]:
    """The fields an event's hash covers, in the documented form (positional: verification
    builds one per stored event, and keyword passing would show in its running time)."""
    return envelope_of_texts(
        str(event_id), type_name, source_slug, customer, actor, format_time(occurred_at), format_time(received_at),
        description, payload, origin,
    )  # fmt: skip


def envelope_of_texts(  # noqa: PLR0917 - positional, as envelope()
    event_id: str,
    type_name: str,
    source_slug: str,
    customer: str | None,
    actor: str | None,
    occurred_at: str,
    received_at: str,
    description: str | None,
    payload: dict[str, Any],
    origin: str | None = None,
    /,
) -> dict[str, Any]:
    """envelope() with the id and times already in their text form: verification has
    PostgreSQL write them (SQL_TIME), which costs it less than Python's formatting."""
    fields = {
        "id": event_id,
        "type": type_name,
        "source": source_slug,
        "customer": customer,
        "actor": actor,
        "occurred_at": occurred_at,
        "received_at": received_at,
        "description": description,
        "payload": payload,
    }
    if origin is not None:
        fields["origin"] = origin
    return fields


# format_time() in SQL, for a timestamptz column: the same RFC 3339 text, microseconds and Z.
SQL_TIME = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
# An event's envelope_of_texts() arguments, then its stored hash, as SQL over events_event e
# joined by EVENT_JOINS: what verification recomputes a stored event from.
EVENT_COLUMNS = (
    f"e.id::text, t.name, s.slug, c.external_id, e.actor, {SQL_TIME.format('e.occurred_at')}, "
    f"{SQL_TIME.format('e.received_at')}, e.description, e.payload, e.origin, e.hash"
)
# Binary COPY column types of EVENT_COLUMNS (varchar travels as text; the times come as text).
EVENT_TYPES = ["text", "text", "text", "text", "text", "text", "text", "text", "jsonb", "text", "text"]
EVENT_JOINS = (
    "JOIN events_eventtype t ON t.id = e.type_id JOIN events_source s ON s.id = e.source_id "
    "LEFT JOIN customers_customer c ON c.id = e.customer_id"
)


def envelope_hash(fields: dict[str, Any], *, payload_is_canonical: bool = False) -> str:
    """Hex SHA-256 of the RFC 8785 form of an envelope.

    payload_is_canonical (validation proved it) lets orjson write the bytes directly: every
    other envelope value is a string, null or ASCII-keyed, which orjson already writes as JCS.
    """
    if payload_is_canonical:
        return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return hashlib.sha256(canonical_json(fields)).hexdigest()


def recomputed_hash(fields: dict[str, Any], expected: str) -> str:
    """An envelope's hash when checking a stored one: orjson's sorted output first, which is
    the RFC 8785 form for nearly every payload, so a match proves it (SHA-256 does not
    collide); otherwise the exact canonicaliser decides."""
    # Spelled out rather than through envelope_hash(): this runs once per stored event.
    fast = hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return fast if fast == expected else envelope_hash(fields)


def event_hash(
    *,
    event_id: uuid.UUID | str,
    type_name: str,
    source_slug: str,
    customer: str | None,
    actor: str | None,
    occurred_at: datetime,
    received_at: datetime,
    description: str | None,
    payload: dict[str, Any],
    origin: str | None = None,
    payload_is_canonical: bool = False,
) -> str:
    """Hex SHA-256 of an event's canonical envelope."""
    fields = envelope(
        event_id, type_name, source_slug, customer, actor, occurred_at, received_at, description, payload, origin
    )
    return envelope_hash(fields, payload_is_canonical=payload_is_canonical)

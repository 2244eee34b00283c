"""The log's own events, of the source "auditsvc": reads, admin changes, retention, erasure.
Stored through the one write path like any other source's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from events.ingest.validation import parse_event
from events.ingest.write import ingest_events
from events.models import SERVICE_SOURCE, EventType, Source

READ_TYPE = "auditsvc.read"
SERVICE_TYPES = {
    READ_TYPE: "Somebody read the log: an API read or an admin page; what was asked and how many events it showed.",
    "auditsvc.admin.add": "An object was created in the admin (payload: its fields after).",
    "auditsvc.admin.change": "An object was changed in the admin (payload: its fields before and after).",
    "auditsvc.admin.delete": "An object was deleted in the admin (payload: its fields before).",
    "auditsvc.admin.revoke": "An API key was revoked in the admin.",
    "auditsvc.retention.applied": "manage.py apply_retention archived and dropped whole months of events.",
    "auditsvc.schema.registered": "A version of an event type's payload schema was registered.",
    "auditsvc.customer.erased": "manage.py erase_customer destroyed a customer's data keys (payload: their ids).",
}
MAX_VALUE_CHARS = 500  # of one filter value in a record: a URL is bounded, a record should be too


def service_source() -> Source:
    """The "auditsvc" source and its event types, made on first use (strict deployments too).
    Not cached: a restored database, or a test's flush, may have taken them away."""
    source, _ = Source.objects.get_or_create(
        slug=SERVICE_SOURCE, defaults={"name": "auditsvc", "description": "The service's own events."}
    )
    known = set(EventType.objects.filter(name__in=SERVICE_TYPES).values_list("name", flat=True))
    for name in SERVICE_TYPES.keys() - known:
        EventType.objects.get_or_create(name=name, defaults={"description": SERVICE_TYPES[name]})
    return source


def store_service_event(
    *, type: str, actor: str, description: str, payload: dict[str, Any], customer: str = "", max_chars: int = 500
) -> None:
    """One event of the service's own, stored now (in the caller's transaction, if any)."""
    raw = {"type": type, "actor": actor, "description": description[:500], "payload": clean(payload, max_chars)}
    if customer:
        raw["customer"] = customer
    ingest_events(source=service_source(), items=[parse_event(raw)], is_batch=False)


def clean(value: Any, max_chars: int = MAX_VALUE_CHARS) -> Any:
    """A value a record can hold: no NUL (PostgreSQL's JSON refuses it), strings bounded."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")[:max_chars]
    if isinstance(value, Mapping):
        return {clean(str(key), max_chars): clean(item, max_chars) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clean(item, max_chars) for item in value]
    return value

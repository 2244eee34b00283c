"""CloudEvents 1.0 in: the HTTP binding's structured, batch and binary modes, and the import's
records, mapped onto the native event and then validated by the same rules (parse_event).

The mapping: `id` is the idempotency key, `type` the type, `subject` the customer, `time`
occurred_at, `data` the payload; `source` is recorded as the event's origin (hashed) and never
stands in for the API key's source; a `dataschema` naming one of the type's versions
(".../event-types/<type>/schemas/<n>") is what the payload is checked against. The extensions
`actor` and `description` carry those fields. Errors name the CloudEvents attribute ("time",
"[2].data.amount", "ce-time"), never the native field it maps to.

Hand-written rather than through the CloudEvents SDK: its parser accepts duplicate keys and
unbounded input, and has no batch mode; the tests use the SDK to build requests instead, so
that what the reference implementation sends is what is tested.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

from django.conf import settings

from auditsvc.errors import FieldError, InvalidInput, ProblemError
from events.ingest.validation import EventIn, IngestRequest, load_json, parse_batch_items, parse_event

SPEC_VERSION = "1.0"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
BINARY = "binary"  # ce-* headers with the data as the body
ORIGIN_MAX = 500  # events.models.Event.origin

# CloudEvents attribute → the native field it becomes.
_TO_NATIVE = {
    "id": "idempotency_key",
    "type": "type",
    "subject": "customer",
    "time": "occurred_at",
    "data": "payload",
    "actor": "actor",
    "description": "description",
}
_TO_ATTRIBUTE = {native: attribute for attribute, native in _TO_NATIVE.items()}
# Distributed tracing (the CloudEvents extension): transport, like a request id; not stored.
_TRACING = frozenset({"traceparent", "tracestate"})
_KNOWN = frozenset({"specversion", "source", "datacontenttype", "dataschema", *_TO_NATIVE, *_TRACING})
# What an auditsvc export adds (events.export._cloudevent), read back only by import_events.
EXPORT_EXTENSIONS = {
    "auditsvcid": "id",
    "auditsvcreceivedat": "received_at",
    "auditsvchash": "hash",
    "auditsvcsource": "source",
    "auditsvcorigin": "origin",
}
_DATASCHEMA_VERSION = re.compile(r"/event-types/(?P<type>[^/]+)/schemas/(?P<version>[0-9]{1,9})/?$")
# Lower case, as everyone sends it (and as the OpenAPI pattern can say): application/json, +json types.
JSON_MEDIA_TYPE = r"^application/([a-z0-9.+-]+\+)?json( *;.*)?$"
_JSON_MEDIA_TYPE = re.compile(JSON_MEDIA_TYPE)


def mode_of(content_type: str, headers: Mapping[str, str]) -> str | None:
    """STRUCTURED, BATCH or BINARY for a CloudEvents request; None for the native format."""
    media_type = content_type.split(";", maxsplit=1)[0].strip().lower()
    if media_type in (STRUCTURED, BATCH):
        return media_type
    if "ce-specversion" in headers:
        return BINARY
    return None


def parse_body(mode: str, body: bytes, headers: Mapping[str, str], *, max_events: int | None = None) -> IngestRequest:
    """The events of a CloudEvents request body (errors named by attribute: see error_names)."""
    header = headers.get("Idempotency-Key")
    if mode == BATCH:
        if header is not None:
            message = "Batches carry idempotency keys per event (their ids), not in the header."
            raise InvalidInput([FieldError("Idempotency-Key", "header_not_allowed", message)])
        return IngestRequest(
            events=_batch(load_json(body), max_events or settings.AUDITSVC_BATCH_MAX_EVENTS), is_batch=True
        )
    event = _binary_event(body, headers) if mode == BINARY else event_of(load_json(body))
    if header is not None and header != event.idempotency_key:
        message = "The Idempotency-Key header and the event's id differ."
        raise InvalidInput([FieldError("idempotency_key", "conflicting_idempotency_key", message)])
    return IngestRequest(events=[event], is_batch=False)


def _batch(document: Any, max_events: int) -> list[EventIn]:
    if not isinstance(document, list):
        raise InvalidInput([FieldError(None, "invalid_body", "A CloudEvents batch is a JSON array of events.")])
    return parse_batch_items(document, max_events=max_events, field=None, parse=event_of)


def _binary_event(body: bytes, headers: Mapping[str, str]) -> EventIn:
    """Binary mode: the attributes are ce-* headers (percent-encoded, as the HTTP binding says),
    the body is the data, and its Content-Type the datacontenttype."""
    document: dict[str, Any] = {}
    errors = []
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith("ce-") and len(lowered) > 3:
            try:
                document[lowered[3:]] = unquote(value, errors="strict")
            except UnicodeDecodeError:
                errors.append(FieldError(lowered, "invalid_header", "Not percent-encoded UTF-8."))
    if errors:
        raise InvalidInput(errors)
    if "datacontenttype" in document:
        raise InvalidInput([FieldError("ce-datacontenttype", "unknown_field", "Binary mode sends it as Content-Type.")])
    content_type = headers.get("Content-Type", "")
    if content_type and not _JSON_MEDIA_TYPE.fullmatch(content_type):
        message = "The data of a binary-mode CloudEvent is JSON: Content-Type application/json, or none."
        raise ProblemError([FieldError(None, "unsupported_media_type", message)], status=415)
    if body.strip():
        document["data"] = load_json(body)
    return event_of(document)


def event_of(document: Any, *, path: str = "") -> EventIn:
    """One CloudEvent (a parsed JSON object) as the write path's EventIn."""
    record, origin, version = native_record(document, path=path)
    return parse_event(record, path=path, origin=origin, dataschema_version=version)


def native_record(document: Any, *, path: str = "", exported: bool = False) -> tuple[dict[str, Any], str, int | None]:
    """(the native record, the origin, the schema version dataschema names) of a CloudEvent;
    InvalidInput (native field names, which error_names turns back) when an attribute is wrong."""
    if not isinstance(document, dict):
        raise InvalidInput([FieldError(path.rstrip(".") or None, "wrong_type", "An event must be a JSON object.")])
    errors: list[FieldError] = []
    known = _KNOWN | EXPORT_EXTENSIONS.keys() if exported else _KNOWN
    for name in document:
        if name == "data_base64":
            message = "data must be a JSON object; data_base64 is not accepted."
            errors.append(FieldError(f"{path}payload", "unsupported_data", message))
        elif name not in known:
            errors.append(FieldError(f"{path}{name}", "unknown_field", f"Unknown attribute '{name}'."))
    specversion = document.get("specversion")
    if specversion is None:
        errors.append(FieldError(f"{path}specversion", "required", "This attribute is required."))
    elif specversion != SPEC_VERSION:
        message = f"Only CloudEvents {SPEC_VERSION} is accepted, got {str(specversion)[:20]!r}."
        errors.append(FieldError(f"{path}specversion", "unsupported_specversion", message))
    if document.get("id") is None:
        errors.append(FieldError(f"{path}idempotency_key", "required", "This attribute is required."))
    origin = check_origin(document.get("source"), f"{path}source", errors)
    content_type = document.get("datacontenttype")
    if content_type is not None and not (isinstance(content_type, str) and _JSON_MEDIA_TYPE.fullmatch(content_type)):
        message = "data must be JSON: datacontenttype is application/json (or absent)."
        errors.append(FieldError(f"{path}datacontenttype", "unsupported_datacontenttype", message))
    version = _dataschema_version(document.get("dataschema"), document.get("type"), f"{path}dataschema", errors)
    record = {native: document[attribute] for attribute, native in _TO_NATIVE.items() if attribute in document}
    if errors:
        try:
            parse_event(record, path=path)  # every problem in one answer
        except InvalidInput as exc:
            errors += exc.errors
        raise InvalidInput(errors)
    assert origin is not None  # check_origin reported it otherwise
    return record, origin, version


def check_origin(value: Any, field: str, errors: list[FieldError]) -> str | None:
    if value is None:
        errors.append(FieldError(field, "required", "This attribute is required."))
    elif not isinstance(value, str):
        errors.append(FieldError(field, "wrong_type", "Must be a string (a URI-reference)."))
    elif not value.strip() or "\x00" in value or len(value) > ORIGIN_MAX:
        message = f"Must be 1 to {ORIGIN_MAX} characters, without NUL."
        errors.append(FieldError(field, "invalid", message))
    else:
        return value
    return None


def _dataschema_version(value: Any, type_name: Any, field: str, errors: list[FieldError]) -> int | None:
    """The version a dataschema names (".../event-types/billing.charged/schemas/3"); None for
    any other URI, which is the sender's own business and not stored."""
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append(FieldError(field, "wrong_type", "Must be a string (a URI)."))
        return None
    match = _DATASCHEMA_VERSION.search(value)
    if match is None:
        return None
    if match["type"] != type_name:
        message = f"Names a schema of {match['type']}, not of this event's type."
        errors.append(FieldError(field, "dataschema_type_mismatch", message))
        return None
    return int(match["version"])


@contextmanager
def error_names(mode: str) -> Iterator[None]:
    """Re-raise any ProblemError of the block with its fields named as the sender named them:
    "events[2].occurred_at" → "[2].time" (batch), "payload.amount" → "data.amount", and in
    binary mode "occurred_at" → "ce-time" (the data, the body, stays "data")."""
    try:
        yield
    except ProblemError as exc:
        renamed = [replace(error, field=attribute_name(error.field, mode)) for error in exc.errors]
        raise type(exc)(renamed, status=exc.status) from None


_FIELD = re.compile(r"^(?:events\[(?P<index>\d+)\]\.)?(?P<name>[A-Za-z_]+)(?P<rest>.*)$", re.DOTALL)


def attribute_name(field: str | None, mode: str) -> str | None:
    match = _FIELD.match(field or "")
    if match is None or field == "Idempotency-Key":
        return field
    name = _TO_ATTRIBUTE.get(match["name"], match["name"])
    if mode == BINARY and name != "data":
        name = f"ce-{name}"
    prefix = f"[{match['index']}]." if match["index"] is not None else ""
    return f"{prefix}{name}{match['rest']}"

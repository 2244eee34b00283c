"""The ingest rule set, written once: raw JSON values in, EventIn (or field-level errors) out.

Hand-written rather than a DRF serializer: a batch of 1,000 events cannot afford DRF's
per-field machinery, and the same rules serve the API, the bulk import and the consumer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.conf import settings

from auditsvc.errors import FieldError, InvalidInput
from auditsvc.times import RFC3339_RE, parse_rfc3339
from events.data_keys import fingerprint_key

TYPE_NAME_MAX = 200
CUSTOMER_MAX = 200
ACTOR_MAX = 200
DESCRIPTION_MAX = 2000
IDEMPOTENCY_KEY_MAX = 200
IDENTITY_SYSTEM_MAX = 100
IDENTITY_ID_MAX = 200
IDENTITIES_MAX = 20
PAYLOAD_MAX_DEPTH = 32
# Integers beyond ±(2^53 - 1) lose precision as IEEE doubles, which RFC 8785 hashing and
# most JSON clients use; such values belong in strings.
SAFE_INTEGER = 2**53 - 1
# jsonb keeps a number's digits: 1e300 reads back as an integer of 301 digits, which no 64-bit
# JSON writer (orjson) renders. Floats are held within ±2^63; beyond, send them as strings.
FLOAT_LIMIT = 2.0**63
EARLIEST_OCCURRED_AT = datetime(1970, 1, 1, tzinfo=UTC)

# Dotted names: "customer.created", "com.example.billing.charged.v2".
TYPE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]+)*")

EVENT_FIELDS = frozenset(
    {"type", "customer", "customer_identities", "actor", "occurred_at", "description", "payload", "idempotency_key"}
)
IDENTITY_FIELDS = frozenset({"system", "id"})


@dataclass(frozen=True, slots=True)
class EventIn:
    """One validated event as a sender submitted it (times aware, strings checked)."""

    type: str
    customer: str | None
    customer_identities: tuple[tuple[str, str], ...]
    actor: str | None
    occurred_at: datetime | None  # None: the receipt time
    description: str | None
    payload: dict[str, Any]
    idempotency_key: str | None
    # The item as sent, minus its idempotency key: HMAC under data_keys.fingerprint_key() of its
    # SHA-256 (legacy_fingerprint); an item with marked fields gets one of its protected form
    # instead (events.protection), so that no fingerprint commits to a plain personal value.
    fingerprint: str
    payload_is_canonical: bool = False  # orjson's sorted output is already RFC 8785 (see _check_payload)
    # Set only by import_events, for records that keep their id and receipt time (an export's,
    # or one that names them); their hash is then computed from these. The API never sets these.
    event_id: uuid.UUID | None = None
    received_at: datetime | None = None
    # Set only by import_events: the record's hash recomputes over the record as given, and every
    # marked field holds a protected value, so it is an export of events this log stored.
    proven_export: bool = False
    # Set only by the stream's drainer: the hash the API computed from these same fields when it
    # accepted the event (and answered with); stored as is, not computed twice. verify_events
    # recomputes every stored hash from the stored fields, so a divergence could not hide.
    hash: str | None = None
    # Set only from CloudEvents (events.ingest.cloudevents): the event's `source`, recorded and
    # hashed, and the schema version its `dataschema` names (checked against instead of the latest).
    origin: str | None = None
    dataschema_version: int | None = None
    # Set only on stream entries: the API's check when it accepted the event (see accepted_entry).
    checked_version: int | None = None
    checked_valid: bool | None = None
    # The unkeyed SHA-256 that fingerprints were before they were keyed: accepted when comparing
    # with an idempotency claim made then, never stored.
    legacy_fingerprint: str | None = None
    # Set only by import_events, for a record with neither a key nor an id: its key is derived
    # from its fingerprint once protected (import_identity.derived_key), this being the n-th
    # repeat of its content in the file; legacy_key is the key it got before (SHA-256 of its
    # bytes), which a re-run still recognises.
    derived_key_repeat: int | None = None
    legacy_key: str | None = None

    @property
    def accepted_entry(self) -> bool:
        """A stream entry the API accepted: checked and protected then, and authenticated by its
        MAC since (events.ingest.stream)."""
        return self.hash is not None

    @property
    def stored_as_is(self) -> bool:
        """Whether the payload is already as stored (an accepted_entry, or a proven_export): stored
        as it is, neither checked nor protected again, or its hash would change."""
        return self.accepted_entry or self.proven_export


@dataclass(frozen=True, slots=True)
class IngestRequest:
    events: list[EventIn]
    is_batch: bool


class ItemPaths:
    """Error field names: "events[3].type" in a batch, "type" for a single event."""

    def __init__(self, is_batch: bool) -> None:
        self.is_batch = is_batch

    def __call__(self, index: int, name: str) -> str:
        return f"events[{index}].{name}" if self.is_batch else name


SERVICE_TYPE_PREFIX = "auditsvc."  # the service's own events (events.access_log)
INVALID_TYPE_NAME = "Event types are dotted names of letters, digits, '_' and '-', e.g. 'customer.created'."
RESERVED_TYPE = f"Types beginning {SERVICE_TYPE_PREFIX} are the log's own."


def event_type_name_errors(name: str, field: str) -> list[FieldError]:
    """The rules an event's type follows, for a type named elsewhere (a schema's URL): at most
    TYPE_NAME_MAX characters, a dotted name, and none of the log's own."""
    if len(name) > TYPE_NAME_MAX:
        return [FieldError(field, "too_long", f"At most {TYPE_NAME_MAX} characters, got {len(name)}.")]
    if not TYPE_NAME_RE.fullmatch(name):
        return [FieldError(field, "invalid_event_type", INVALID_TYPE_NAME)]
    if name.startswith(SERVICE_TYPE_PREFIX):
        return [FieldError(field, "reserved_type", RESERVED_TYPE)]
    return []


# The importer's keys (events.ingest.import_identity): an API key of that form could take the
# place of a record a later import brings, which would then count as a duplicate of it.
IMPORT_KEY_PREFIXES = ("import:", "import-id:")
RESERVED_KEY = "Idempotency keys beginning import: or import-id: are the importer's."


def refuse_reserved(request: IngestRequest) -> None:
    """A service may not send an event the log would mistake for its own record of a read or
    a change, nor claim a key the importer derives. (Imports may send auditsvc.* types: an
    export of another auditsvc holds them, under a source of its own.)"""
    paths = ItemPaths(request.is_batch)
    errors = []
    for index, item in enumerate(request.events):
        if item.type.startswith(SERVICE_TYPE_PREFIX):
            errors.append(FieldError(paths(index, "type"), "reserved_type", RESERVED_TYPE))
        if item.idempotency_key is not None and item.idempotency_key.startswith(IMPORT_KEY_PREFIXES):
            errors.append(FieldError(paths(index, "idempotency_key"), "reserved_idempotency_key", RESERVED_KEY))
    if errors:
        raise InvalidInput(errors)


_ITEM_INDEX = re.compile(r"^events\[(\d+)\]")


def failed_items(errors: list[FieldError]) -> set[int]:
    """The batch indexes that errors name ("events[3].type" → 3)."""
    return {int(m.group(1)) for e in errors if e.field and (m := _ITEM_INDEX.match(e.field))}


def errors_of_item(errors: list[FieldError], index: int) -> list[FieldError]:
    """A batch's errors about item index (and about the whole batch), named as for that item
    alone: "events[3].type" → "type"."""
    mine = [e for e in errors if e.field is None or _item_index(e) in (index, None)]
    return [replace(e, field=_ITEM_INDEX.sub("", e.field or "").lstrip(".") or None) for e in mine]


def _item_index(error: FieldError) -> int | None:
    match = _ITEM_INDEX.match(error.field or "")
    return int(match.group(1)) if match else None


class _Errors:
    """Collects FieldErrors so that one response lists every problem of a request."""

    def __init__(self) -> None:
        self.items: list[FieldError] = []

    def add(self, field: str | None, code: str, message: str) -> None:
        self.items.append(FieldError(field, code, message))


def parse_ingest_body(
    body: bytes, *, idempotency_header: str | None = None, max_events: int | None = None
) -> IngestRequest:
    """Parse a POST /api/v1/events body: one event object, or {"events": [...]}."""
    document = load_json(body)
    if not isinstance(document, dict):
        raise InvalidInput([FieldError(None, "invalid_body", "Body must be a JSON object.")])
    max_events = max_events or settings.AUDITSVC_BATCH_MAX_EVENTS
    if "events" not in document:
        event = parse_event(document, path="", idempotency_header=idempotency_header)
        return IngestRequest(events=[event], is_batch=False)

    return IngestRequest(events=_parse_batch(document, idempotency_header, max_events), is_batch=True)


def load_json(body: bytes) -> Any:
    """A request body's JSON document; malformed JSON, a repeated key or a huge integer is a 400."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput([FieldError(None, "malformed_json", f"Body is not valid JSON: {exc}")]) from None
    reject_duplicate_keys(body, document)
    return document


def _parse_batch(document: dict[str, Any], idempotency_header: str | None, max_events: int) -> list[EventIn]:
    errors = _Errors()
    for key in document:
        if key != "events":
            errors.add(str(key), "unknown_field", "A batch body has only the 'events' field.")
    if idempotency_header is not None:
        errors.add(
            "Idempotency-Key", "header_not_allowed", "Batches carry idempotency keys per event, not in the header."
        )
    items = document["events"]
    if not isinstance(items, list):
        errors.add("events", "wrong_type", "Must be a list of event objects.")
        raise InvalidInput(errors.items)
    return parse_batch_items(items, max_events=max_events, field="events", parse=parse_event, errors=errors.items)


def parse_batch_items(
    items: list[Any],
    *,
    max_events: int,
    field: str | None,
    parse: Callable[..., EventIn],
    errors: list[FieldError] | None = None,
) -> list[EventIn]:
    """A batch's events, parsed by parse(item, path="events[i]."), all or none: every error of every
    item in one InvalidInput, after the errors already found (errors); field names the list."""
    errors = list(errors or [])
    if not items:
        errors.append(FieldError(field, "empty_batch", "A batch needs at least one event."))
    if len(items) > max_events:
        message = f"A batch holds at most {max_events} events, got {len(items)}."
        errors.append(FieldError(field, "too_many_events", message))
    if errors:
        raise InvalidInput(errors)
    events = []
    for index, item in enumerate(items):
        try:
            events.append(parse(item, path=f"events[{index}]."))
        except InvalidInput as exc:
            errors.extend(exc.errors)
    if errors:
        raise InvalidInput(errors)
    return events


_FAST_CHECK_MAX_BYTES = 1 << 20  # beyond this, serialising again costs memory for little gain


class _DuplicateKey(ValueError):
    pass


class _HugeInteger(ValueError):
    pass


def _exact_int(text: str) -> int:
    # orjson turns integers beyond 64 bits into floats silently; this pass sees the digits.
    # (Smaller ones beyond 2^53 reach _check_payload, which names the field.)
    value = int(text)
    if not -(2**63) <= value < 2**64:
        raise _HugeInteger(text[:40])
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise _DuplicateKey(duplicate)
    return document


def reject_duplicate_keys(body: bytes, parsed: Any) -> None:
    """Refuse JSON objects that repeat a key (parsers disagree on which value wins, and an
    audit record must mean one thing) and integers too large to be exact. orjson, the fast
    parser, keeps the last key and floats huge integers silently, so the stdlib's C scanner
    checks every object and integer once more.

    Unless body is exactly what orjson writes for parsed (its parse): orjson never writes a
    key twice, and a huge integer would come back as a float, so such a body has neither.
    Compact JSON from most serialisers (orjson, JSON.stringify) passes this way, at a tenth
    of the cost of the second parse.
    """
    try:
        if len(body) < _FAST_CHECK_MAX_BYTES and orjson.dumps(parsed) == body:
            return
    except orjson.JSONEncodeError:  # nested beyond orjson's 254 levels, far beyond the limit
        raise _too_deep() from None
    try:
        json.loads(body, object_pairs_hook=_no_duplicates, parse_int=_exact_int)
    except RecursionError:
        raise _too_deep() from None
    except _DuplicateKey as exc:
        raise InvalidInput(
            [FieldError(None, "duplicate_key", f"The key '{exc}' appears twice in one JSON object.")]
        ) from None
    except _HugeInteger as exc:
        raise InvalidInput(
            [FieldError(None, "number_out_of_range", f"The integer {exc}... lies beyond ±(2^53 - 1).")]
        ) from None
    except ValueError:
        pass  # anything else was judged by orjson already


TOO_DEEP = f"Nested deeper than {PAYLOAD_MAX_DEPTH} levels."


def _too_deep() -> InvalidInput:
    return InvalidInput([FieldError(None, "nesting_too_deep", TOO_DEEP)])


def parse_event(
    raw: Any,
    *,
    path: str = "",
    idempotency_header: str | None = None,
    origin: str | None = None,
    dataschema_version: int | None = None,
) -> EventIn:
    """Validate one event object; path prefixes field names in errors ("events[3]."). origin and
    dataschema_version come from a CloudEvent (events.ingest.cloudevents), checked there."""
    errors = _Errors()
    if not isinstance(raw, dict):
        raise InvalidInput([FieldError(path.rstrip(".") or None, "wrong_type", "An event must be a JSON object.")])
    for key in raw:
        if key not in EVENT_FIELDS:
            errors.add(f"{path}{key}", "unknown_field", f"Unknown field '{key}'.")

    type_name = _string(raw, "type", path, errors, max_length=TYPE_NAME_MAX, required=True)
    if type_name is not None and not TYPE_NAME_RE.fullmatch(type_name):
        errors.add(f"{path}type", "invalid_event_type", INVALID_TYPE_NAME)
    customer = _string(raw, "customer", path, errors, max_length=CUSTOMER_MAX)
    identities = _identities(raw.get("customer_identities"), path, errors)
    if identities and customer is None and "customer" not in {e.field for e in errors.items}:
        errors.add(f"{path}customer", "required", "customer_identities need a customer to attach to.")
    actor = _string(raw, "actor", path, errors, max_length=ACTOR_MAX)
    description = _string(raw, "description", path, errors, max_length=DESCRIPTION_MAX, allow_blank=True)
    occurred_at = _occurred_at(raw.get("occurred_at"), f"{path}occurred_at", errors)
    payload = raw.get("payload")
    payload_is_canonical = True
    if payload is None:
        payload = {}
    elif not isinstance(payload, dict):
        errors.add(f"{path}payload", "wrong_type", "payload must be a JSON object.")
    else:
        payload_is_canonical = _check_payload(payload, f"{path}payload", errors)

    key = _string(raw, "idempotency_key", path, errors, max_length=IDEMPOTENCY_KEY_MAX)
    if idempotency_header is not None:
        header_key = _check_idempotency_header(idempotency_header, errors)
        if key is not None and header_key is not None and key != header_key:
            errors.add(
                f"{path}idempotency_key",
                "conflicting_idempotency_key",
                "The Idempotency-Key header and the idempotency_key field differ.",
            )
        key = key or header_key

    if errors.items:
        raise InvalidInput(errors.items)
    assert type_name is not None  # required=True reported it otherwise
    legacy = fingerprint_of(raw if origin is None else {**raw, "origin": origin})
    return EventIn(
        type=type_name,
        customer=customer,
        customer_identities=identities,
        actor=actor,
        occurred_at=occurred_at,
        description=description,
        payload=payload,
        idempotency_key=key,
        # A retry from another origin is another event.
        fingerprint=keyed_fingerprint(legacy),
        legacy_fingerprint=legacy,
        payload_is_canonical=payload_is_canonical,
        origin=origin,
        dataschema_version=dataschema_version,
    )


def fingerprint_of(raw: dict[str, Any]) -> str:
    """The unkeyed SHA-256 of an item as sent (legacy_fingerprint): never stored."""
    content = {k: v for k, v in raw.items() if k != "idempotency_key"}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


def keyed_fingerprint(content: str | bytes, key: bytes | None = None) -> str:
    """A fingerprint as stored and compared: an HMAC, which no reader can test guesses against.
    key: fingerprint_key(), when the caller has it at hand."""
    data = content.encode() if isinstance(content, str) else content
    return hmac.digest(key or fingerprint_key(), data, "sha256").hex()  # one-shot: C all the way


def _string(
    raw: dict[str, Any],
    name: str,
    path: str,
    errors: _Errors,
    *,
    max_length: int,
    required: bool = False,
    allow_blank: bool = False,
) -> str | None:
    field = f"{path}{name}"
    value = raw.get(name)
    if value is None:
        if required:
            errors.add(field, "required", "This field is required.")
        return None
    if not isinstance(value, str):
        errors.add(field, "wrong_type", "Must be a string.")
        return None
    if "\x00" in value:
        errors.add(field, "null_character", "NUL characters (\\u0000) are not allowed.")
        return None
    if len(value) > max_length:
        errors.add(field, "too_long", f"At most {max_length} characters, got {len(value)}.")
        return None
    if not allow_blank and not value.strip():
        errors.add(field, "blank", "Must not be blank.")
        return None
    return value


def _identities(value: Any, path: str, errors: _Errors) -> tuple[tuple[str, str], ...]:
    field = f"{path}customer_identities"
    if value is None:
        return ()
    if not isinstance(value, list):
        errors.add(field, "wrong_type", "Must be a list of {system, id} objects.")
        return ()
    if len(value) > IDENTITIES_MAX:
        errors.add(field, "too_many_identities", f"At most {IDENTITIES_MAX} identities per event.")
        return ()
    identities: list[tuple[str, str]] = []
    for index, item in enumerate(value):
        item_path = f"{field}[{index}]."
        if not isinstance(item, dict):
            errors.add(item_path.rstrip("."), "wrong_type", "Must be an object {system, id}.")
            continue
        for key in item:
            if key not in IDENTITY_FIELDS:
                errors.add(f"{item_path}{key}", "unknown_field", f"Unknown field '{key}'.")
        system = _string(item, "system", item_path, errors, max_length=IDENTITY_SYSTEM_MAX, required=True)
        external_id = _string(item, "id", item_path, errors, max_length=IDENTITY_ID_MAX, required=True)
        if system is not None and external_id is not None:
            identities.append((system, external_id))
    return tuple(dict.fromkeys(identities))


def _occurred_at(value: Any, field: str, errors: _Errors) -> datetime | None:
    if value is None:
        return None
    parsed = parse_time(value, field, errors.items)
    if parsed is None:
        return None
    now = datetime.now(UTC)
    if parsed > now + timedelta(seconds=settings.AUDITSVC_MAX_FUTURE_SKEW_SECONDS):
        errors.add(field, "in_future", "occurred_at is too far in the future.")
        return None
    if parsed < EARLIEST_OCCURRED_AT:
        errors.add(field, "out_of_range", "occurred_at must not be before 1970-01-01.")
        return None
    return parsed


def parse_time(value: Any, field: str, errors: list[FieldError]) -> datetime | None:
    """An RFC 3339 time, or None with an `invalid_datetime` error (also for 2026-02-30)."""
    message = "Must be an RFC 3339 time with an offset, e.g. 2026-11-24T09:30:00Z."
    if isinstance(value, str):
        try:
            return parse_rfc3339(value)
        except ValueError as exc:
            if RFC3339_RE.fullmatch(value):
                message = f"Not a valid date and time: {exc}."
    errors.append(FieldError(field, "invalid_datetime", message))
    return None


def _check_idempotency_header(value: str, errors: _Errors) -> str | None:
    if not value.strip() or len(value) > IDEMPOTENCY_KEY_MAX or "\x00" in value:
        errors.add("Idempotency-Key", "invalid", f"Must be 1 to {IDEMPOTENCY_KEY_MAX} visible characters.")
        return None
    return value


# A NUL in any string or key shows in the JSON text as \u0000 after an even number of backslashes.
_NUL_IN_JSON = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def contains_nul(json_text: bytes) -> bool:
    """Whether JSON text holds a NUL character in a string or key (PostgreSQL's jsonb refuses it)."""
    return b"\\u0000" in json_text and _NUL_IN_JSON.search(json_text) is not None


def json_object_errors(root: dict[str, Any], field: str, *, max_depth: int = PAYLOAD_MAX_DEPTH) -> list[FieldError]:
    """What the payload rules (depth, NUL characters, number range) find in another JSON object
    the log stores (a filter's document, a schema), named field."""
    errors = _Errors()
    _check_payload(root, field, errors, max_depth=max_depth)
    return errors.items


def _check_payload(root: dict[str, Any], field: str, errors: _Errors, *, max_depth: int = PAYLOAD_MAX_DEPTH) -> bool:
    """Depth, NUL characters and number range; True when the payload's orjson text with
    sorted keys is already its RFC 8785 form (events.integrity.event_hash's fast path).

    Walked iteratively over containers and numbers only: strings and keys are checked for
    NUL in one regex pass over the serialised text, which is cheaper than per-string checks.
    """
    try:
        text = orjson.dumps(root)
    except orjson.JSONEncodeError:  # only a document nested beyond 254 levels gets here
        errors.add(field, "nesting_too_deep", TOO_DEEP)
        return False
    if contains_nul(text):
        errors.add(field, "null_character", "NUL characters (\\u0000) are not allowed.")
        return False
    canonical = True
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            errors.add(field, "nesting_too_deep", f"Nested deeper than {max_depth} levels.")
            return False
        if type(value) is dict:
            items = value.values()
            if canonical and not "".join(value).isascii():
                canonical = False  # JCS orders non-ASCII keys by UTF-16 code units
        else:
            items = value
        for item in items:
            kind = type(item)
            if kind is dict or kind is list:
                stack.append((item, depth + 1))
            elif kind is int or kind is float:
                problem = _number_problem(item)
                if problem:
                    errors.add(field, "number_out_of_range", problem)
                    return False
                canonical = canonical and (kind is int or _canonical_float(item))
    return canonical


def _number_problem(value: float) -> str | None:
    """Why a JSON number cannot be stored as it was sent, if it cannot."""
    if type(value) is int:
        if not -SAFE_INTEGER <= value <= SAFE_INTEGER:
            return "Integers must lie within ±(2^53 - 1); send larger values as strings."
    elif not -FLOAT_LIMIT < value < FLOAT_LIMIT:
        return "Numbers must lie within ±2^63; send larger ones as strings."
    return None


def _canonical_float(value: float) -> bool:
    """Whether orjson writes value as RFC 8785 (ECMAScript) does."""
    return not value.is_integer() and 1e-4 <= abs(value) < 1e16

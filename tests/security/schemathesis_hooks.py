"""Rules of the ingest body that OpenAPI 3.0 cannot state, for schemathesis (SCHEMATHESIS_HOOKS).

Each filter drops only generated requests that break one of these rules, all documented in
the README and enforced (with a 400 naming the field) by events.ingest.validation:
- the Idempotency-Key header names a single event's key: it must equal the body's
  `idempotency_key` when both are sent, and a batch carries keys per event, not in the header;
- `customer_identities` need a `customer`;
- `occurred_at` lies at most 5 minutes in the future (relative to now, which no schema knows);
- no NUL in object keys (JSON Schema's propertyNames is not OpenAPI 3.0), no integral
  number beyond ±(2^53-1) where the schema says `number`, and no number beyond ±2^63; at most
  32 levels of nesting;
- a cursor is one the service issued (filter_query);
- the same rules for CloudEvents bodies (`time` for occurred_at, `data` for the payload, `id`
  for the key), and a `dataschema` that names a schema of this service names an existing one;
- a schema registration's `schema` is a valid JSON Schema of draft 2020-12 (no other `$schema`)
  within the payload rules, at most 31 levels deep, and no `auditsvc.` type gets one.
Everything else a schema-valid request holds, the service must accept.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema_rs
import schemathesis

SAFE_INTEGER = 2**53 - 1
FLOAT_LIMIT = 2.0**63
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
MAX_DEPTH = 32


def _json_ok(value: Any, depth: int = 1) -> bool:
    if depth > MAX_DEPTH:
        return False
    if isinstance(value, dict):
        return all("\x00" not in key and _json_ok(item, depth + 1) for key, item in value.items())
    if isinstance(value, list):
        return all(_json_ok(item, depth + 1) for item in value)
    if isinstance(value, float) and abs(value) >= FLOAT_LIMIT:
        return False
    if isinstance(value, float) and value.is_integer():
        return abs(value) <= SAFE_INTEGER or abs(value) >= 1e16  # beyond, JSON writes it with an exponent
    return not (isinstance(value, int) and not isinstance(value, bool) and abs(value) > SAFE_INTEGER)


def _event_ok(event: Any) -> bool:
    if not isinstance(event, dict):
        return True  # a negative case: the service refuses it, as it should
    if event.get("customer_identities") and event.get("customer") is None:
        return False
    occurred = event.get("occurred_at")
    if isinstance(occurred, str):
        try:
            if datetime.fromisoformat(occurred.upper()) > datetime.now(UTC) + timedelta(minutes=4):
                return False
        except ValueError:
            return True
    return _json_ok(event.get("payload"))


def _cloudevent_ok(event: Any) -> bool:
    if not isinstance(event, dict):
        return True
    if "/event-types/" in str(event.get("dataschema", "")):
        return False
    return _event_ok({"occurred_at": event.get("time"), "payload": event.get("data")})


def _schema_registration_ok(case: Any) -> bool:
    if str((case.path_parameters or {}).get("name", "")).startswith("auditsvc."):
        return False
    schema = case.body.get("schema") if isinstance(case.body, dict) else None
    if not isinstance(schema, dict):
        return True  # a negative case
    if schema.get("$schema", DRAFT_2020_12) not in (DRAFT_2020_12, DRAFT_2020_12 + "#"):
        return False
    if not _json_ok(schema, depth=2):  # the registration record holds it one level down
        return False
    try:
        jsonschema_rs.meta.validate(schema)
        jsonschema_rs.Draft202012Validator(schema, offline=True)
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError):
        return False
    return True


@schemathesis.hook
def filter_case(ctx: Any, case: Any) -> bool:  # noqa: PLR0911 - one rule per body kind
    if case.method == "PUT" and case.path.endswith("/schema"):
        return _schema_registration_ok(case)
    if case.method != "POST":
        return True
    header = (case.headers or {}).get("Idempotency-Key")
    if isinstance(case.body, list):  # a CloudEvents batch
        return header is None and all(_cloudevent_ok(event) for event in case.body)
    if not isinstance(case.body, dict):
        return True
    if "specversion" in case.body:  # a CloudEvent
        return header in (None, case.body.get("id")) and _cloudevent_ok(case.body)
    if "events" in case.body:
        events = case.body["events"] if isinstance(case.body["events"], list) else []
        return header is None and all(_event_ok(event) for event in events)
    if header is not None and case.body.get("idempotency_key") not in (None, header):
        return False
    return _event_ok(case.body)


@schemathesis.hook
def filter_query(ctx: Any, query: Any) -> bool:
    """A cursor is an opaque token the service signs and issues in `next`: made-up ones are
    `400 invalid_cursor`, as they must be. The `payload` filter's JSON keeps the body's rules."""
    if not query:
        return True
    payload = query.get("payload")
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            return True  # a negative case
    return not query.get("cursor") and _json_ok(payload)

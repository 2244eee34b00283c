"""The parts of the OpenAPI schema that code cannot derive: the ingest body, written from the
constants events.ingest.validation enforces, so that the schema and the service agree.

Added to /api/schema/ by a drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS).
"""

from __future__ import annotations

from typing import Any

from events.ingest import validation as rules
from events.ingest.cloudevents import JSON_MEDIA_TYPE

REF = "#/components/schemas/"
# ECMAScript patterns (OpenAPI's dialect): no NUL anywhere, and not only whitespace.
NO_NUL = "^[^\\u0000]*$"
NOT_BLANK = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
TYPE_NAME = "^" + rules.TYPE_NAME_RE.pattern.replace("(?:", "(") + "$"
# RFC 3339 with an offset, seconds 00-59 (no leap second: Python has none). Filters take any
# year (a bound beyond Python's calendar in UTC is clamped to it); occurred_at starts in 1970.
_CLOCK = (
    "-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:"
    "[0-5][0-9](\\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
TIME = "^(19[7-9][0-9]|[2-9][0-9]{3})" + _CLOCK
FILTER_TIME = "^[0-9]{4}" + _CLOCK
TIME_PARAMETER = {"type": "string", "format": "date-time", "pattern": FILTER_TIME}
TEXT_PARAMETER = {"type": "string", "pattern": NO_NUL}
REQUIRED_TEXT_PARAMETER = {"type": "string", "pattern": NOT_BLANK}


def _text(max_length: int, *, blank: bool = False, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length, "pattern": NO_NUL if blank else NOT_BLANK, **extra}


JSON_VALUE = {
    "description": "Any JSON value; integers within ±(2^53-1), other numbers within ±2^63, no NUL characters, "
    "at most 32 levels deep.",
    "nullable": True,
    "anyOf": [
        {"type": "string", "pattern": NO_NUL},
        {"type": "integer", "minimum": -rules.SAFE_INTEGER, "maximum": rules.SAFE_INTEGER},
        {"type": "number"},  # within ±2^63 (schemathesis_hooks): a bound here invites integers beyond 2^53
        {"type": "boolean"},
        {"type": "array", "items": {"$ref": REF + "JsonValue"}},
        {"type": "object", "additionalProperties": {"$ref": REF + "JsonValue"}},
    ],
}
EVENT_INPUT: dict[str, Any] = {
    "type": "object",
    "description": "One event. Unknown fields are refused.",
    "additionalProperties": False,
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "maxLength": rules.TYPE_NAME_MAX, "pattern": TYPE_NAME,
                 "description": "dotted name, e.g. billing.charged"},
        "customer": _text(rules.CUSTOMER_MAX, nullable=True, description="the customer's external id"),
        "customer_identities": {
            "type": "array", "nullable": True, "maxItems": rules.IDENTITIES_MAX,
            "description": "the customer's ids in other systems; needs `customer`",
            "items": {
                "type": "object", "additionalProperties": False, "required": ["system", "id"],
                "properties": {"system": _text(rules.IDENTITY_SYSTEM_MAX), "id": _text(rules.IDENTITY_ID_MAX)},
            },
        },
        "actor": _text(rules.ACTOR_MAX, nullable=True, description="who did it"),
        "occurred_at": {"type": "string", "format": "date-time", "pattern": TIME, "nullable": True,
                        "description": "RFC 3339 with an offset; default: the receipt time; at most "
                                       "AUDITSVC_MAX_FUTURE_SKEW_SECONDS (5 min) in the future"},
        "description": _text(rules.DESCRIPTION_MAX, blank=True, nullable=True),
        "payload": {"type": "object", "nullable": True, "additionalProperties": {"$ref": REF + "JsonValue"},
                    "description": "a JSON object (default {}), at most 32 levels deep"},
        "idempotency_key": _text(rules.IDEMPOTENCY_KEY_MAX, nullable=True,
                                 description="a retry with the same key stores nothing new"),
    },
}  # fmt: skip
EVENT_BATCH_INPUT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["events"],
    "properties": {
        "events": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {"$ref": REF + "EventInput"},
                   "description": "1 to AUDITSVC_BATCH_MAX_EVENTS (1,000) events, stored all or none"},
    },
}  # fmt: skip
INGEST_BODY = {"oneOf": [{"$ref": REF + "EventInput"}, {"$ref": REF + "EventBatchInput"}]}
CLOUDEVENT_INPUT = {
    "type": "object",
    "description": "A CloudEvents 1.0 event in the JSON format (structured mode). Unknown attributes are "
                   "refused, except traceparent and tracestate (not stored). Binary mode sends the same "
                   "attributes as ce-* headers and `data` as an application/json body.",
    "additionalProperties": False,
    "required": ["specversion", "id", "source", "type"],
    "properties": {
        "specversion": {"type": "string", "enum": ["1.0"]},
        "id": _text(rules.IDEMPOTENCY_KEY_MAX, description="the idempotency key"),
        "source": _text(500, description="recorded (and hashed) as the event's origin; the API key "
                                         "still decides its source"),
        "type": EVENT_INPUT["properties"]["type"],
        "subject": _text(rules.CUSTOMER_MAX, nullable=True, description="the customer's external id"),
        "time": {**EVENT_INPUT["properties"]["occurred_at"], "description": "occurred_at"},
        "datacontenttype": {"type": "string", "pattern": JSON_MEDIA_TYPE,
                            "description": "application/json (or a +json type), or absent"},
        "dataschema": {"type": "string", "format": "uri-reference",
                       "description": "…/event-types/<type>/schemas/<n> checks data against version n; "
                                      "other URIs are ignored"},
        "data": {**EVENT_INPUT["properties"]["payload"], "description": "the payload"},
        "actor": EVENT_INPUT["properties"]["actor"],
        "description": EVENT_INPUT["properties"]["description"],
        "traceparent": {"type": "string"},
        "tracestate": {"type": "string"},
    },
}  # fmt: skip
CLOUDEVENTS_BATCH = {"type": "array", "minItems": 1, "maxItems": 1000, "items": {"$ref": REF + "CloudEventInput"}}
IDEMPOTENCY_HEADER = _text(rules.IDEMPOTENCY_KEY_MAX)
# PUT /api/v1/event-types/{name}/schema: the body, and the name an event type may have.
SCHEMA_REGISTRATION_INPUT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["schema"],
    "properties": {
        "schema": {"type": "object", "description": "a JSON Schema (draft 2020-12) for the payload, at most 31 "
                   "levels deep; `$schema`, when given, is https://json-schema.org/draft/2020-12/schema"},
        "validation": {"type": "string", "enum": ["off", "warn", "enforce", None], "nullable": True,
                       "description": "what ingest does with a payload that fails it; absent: unchanged"},
    },
}  # fmt: skip
EVENT_TYPE_NAME = {"type": "string", "maxLength": rules.TYPE_NAME_MAX, "pattern": TYPE_NAME}


# The `payload` filter is JSON text: OpenAPI says so with `content`, not `schema`.
PAYLOAD_PARAMETER_CONTENT = {
    "application/json": {"schema": {"type": "object", "additionalProperties": {"$ref": REF + "JsonValue"}}}
}
# A stored event's id, in the single-event answer, leads to its detail and its proof.
EVENT_LINKS = {
    "GetEvent": {"operationId": "v1_events_retrieve", "parameters": {"id": "$response.body#/id"}},
    "GetEventProof": {"operationId": "v1_events_proof_retrieve", "parameters": {"id": "$response.body#/id"}},
}


def add_ingest_components(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the components above, the bodies marked required,
    the payload filter as JSON content, and links from a stored event to its reads."""
    result.setdefault("components", {}).setdefault("schemas", {}).update(
        {
            "JsonValue": JSON_VALUE,
            "EventInput": EVENT_INPUT,
            "EventBatchInput": EVENT_BATCH_INPUT,
            "CloudEventInput": CLOUDEVENT_INPUT,
        }
    )
    paths = result.get("paths", {})
    put = paths.get("/api/v1/event-types/{name}/schema", {}).get("put")
    if put and "requestBody" in put:
        put["requestBody"]["required"] = True
    post = paths.get("/api/v1/events", {}).get("post")
    if post and "requestBody" in post:
        post["requestBody"]["required"] = True
        for status in ("200", "201"):
            if status in post.get("responses", {}):
                post["responses"][status]["links"] = EVENT_LINKS
    for operations in paths.values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query" and parameter["name"] == "payload":
                    parameter.pop("schema", None)
                    parameter["content"] = PAYLOAD_PARAMETER_CONTENT
    return result

"""Hostile bodies on PUT /api/v1/event-types/{name}/schema: each a 4xx naming what is wrong,
and nothing written, no event type included (before, malformed and deeply nested bodies were a
500, and the type was created before anything was checked). No committing test transaction
wraps the requests: what a refused request wrote would stay."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from events.models import Event, EventSchema, EventType

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("production_write_path")]


def deep(levels: int, inner: bytes = b"{}") -> bytes:
    return b'{"items": ' * levels + inner + b"}" * levels


def put(text: bytes) -> bytes:
    return b'{"schema": ' + text + b"}"


# (name, type name, body, query, status, code)
CASES: list[tuple[str, str, bytes, str, int, str]] = [
    ("truncated JSON", "a.b", b'{"schema": ', "", 400, "malformed_json"),
    ("not JSON", "a.b", b"schema=1", "", 400, "malformed_json"),
    ("objects 10,000 deep", "a.b", put(b'{"a": ' * 10_000 + b"1" + b"}" * 10_000), "", 400, "malformed_json"),
    ("arrays 10,000 deep", "a.b", put(b"[" * 10_000 + b"]" * 10_000), "", 400, "malformed_json"),
    ("schema 32 deep", "a.b", put(deep(31)), "", 400, "nesting_too_deep"),
    ("schema 300 deep", "a.b", put(deep(299)), "", 400, "nesting_too_deep"),
    ("duplicate key", "a.b", b'{"schema": {}, "schema": {"type": "object"}}', "", 400, "duplicate_key"),
    ("NUL in a value", "a.b", json.dumps({"schema": {"title": "a\u0000b"}}).encode(), "", 400, "null_character"),
    ("NUL in a key", "a.b", json.dumps({"schema": {"properties": {"a\u0000": {}}}}).encode(), "", 400,
     "null_character"),
    ("huge integer", "a.b", put(b'{"maximum": 18446744073709551616}'), "", 400, "number_out_of_range"),
    ("integer beyond 2^53", "a.b", put(b'{"maximum": 9007199254740993}'), "", 400, "number_out_of_range"),
    ("float 1e300", "a.b", put(b'{"maximum": 1e300}'), "", 400, "number_out_of_range"),
    ("body is an array", "a.b", b"[1]", "", 400, "required"),
    ("empty body", "a.b", b"", "", 400, "required"),
    ("unknown field", "a.b", b'{"schema": {}, "versions": 2}', "", 400, "unknown_field"),
    ("schema is a number", "a.b", put(b"5"), "", 400, "invalid_schema"),
    ("schema is a string", "a.b", put(b'"{}"'), "", 400, "invalid_schema"),
    ("schema is an array", "a.b", put(b"[]"), "", 400, "invalid_schema"),
    ("type is a number", "a.b", put(b'{"type": 5}'), "", 400, "invalid_schema"),
    ("properties is a list", "a.b", put(b'{"properties": [{"x-auditsvc": "personal"}]}'), "", 400,
     "invalid_schema"),
    ("broken regex", "a.b", put(b'{"pattern": "("}'), "", 400, "invalid_schema"),
    ("remote $ref", "a.b", put(b'{"$ref": "https://example.com/schema.json"}'), "", 400, "invalid_schema"),
    ("draft-07 $schema", "a.b", put(b'{"$schema": "http://json-schema.org/draft-07/schema#"}'), "", 400,
     "invalid_schema"),
    ("$schema not a string", "a.b", put(b'{"$schema": 7}'), "", 400, "invalid_schema"),
    ("bad marking", "a.b", put(b'{"properties": {"a": {"x-auditsvc": "secret"}}}'), "", 400, "invalid_marking"),
    ("validation a number", "a.b", b'{"schema": {}, "validation": 5}', "", 400, "invalid_choice"),
    ("validation an object", "a.b", b'{"schema": {}, "validation": {"mode": "enforce"}}', "", 400,
     "invalid_choice"),
    ("reserved type", "auditsvc.read", put(b'{"type": "object"}'), "", 400, "reserved_type"),
    ("reserved type, enforced", "auditsvc.schema.registered", b'{"schema": {}, "validation": "enforce"}', "", 400,
     "reserved_type"),
    ("type with a space", "a b", put(b"{}"), "", 400, "invalid_event_type"),
    ("type with markup", "<b>x<b>", put(b"{}"), "", 400, "invalid_event_type"),
    ("type too long", "a" * 201, put(b"{}"), "", 400, "too_long"),
    ("force is not a boolean", "a.b", put(b"{}"), "?force=maybe", 400, "invalid_choice"),
    ("force=1", "a.b", put(b"{}"), "?force=1", 400, "invalid_choice"),
    ("force, empty", "a.b", put(b"{}"), "?force=", 400, "invalid_choice"),
    ("force by a key", "a.b", put(b"{}"), "?force=true", 403, "permission_denied"),
    ("unknown parameter", "a.b", put(b"{}"), "?dry_run=true", 400, "unknown_parameter"),
]  # fmt: skip


@pytest.fixture
def schema_api(make_client):
    return make_client("registry", ("ingest", "read", "schema"))


@pytest.mark.parametrize(("name", "type_name", "body", "query", "status", "code"), CASES, ids=[c[0] for c in CASES])
def test_hostile_schema_bodies_write_nothing(schema_api, name, type_name, body, query, status, code):
    response = schema_api.client.generic(
        "PUT", f"/api/v1/event-types/{type_name}/schema{query}", body, content_type="application/json"
    )

    assert response.status_code == status, response.content[:500]
    errors = response.json()["errors"]
    assert code in [e["code"] for e in errors], errors
    assert all(set(e) == {"field", "code", "message"} for e in errors)
    assert not EventType.objects.exists()
    assert not EventSchema.objects.exists()
    assert not Event.objects.exists()  # no auditsvc.schema.registered either


def test_a_schema_as_deep_as_its_record_can_hold_is_registered(schema_api):
    response = schema_api.client.generic(
        "PUT", "/api/v1/event-types/a.b/schema?force=false", put(deep(30)), content_type="application/json"
    )

    assert response.status_code == 201, response.content[:300]
    assert EventSchema.objects.get(type__name="a.b").version == 1
    assert Event.objects.filter(type__name="auditsvc.schema.registered").count() == 1


@pytest.fixture
def fetch_log() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that notes every path asked of it."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = json.dumps({"$schema": "https://json-schema.org/draft/2020-12/schema"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", asked
    server.shutdown()


def test_a_remote_meta_schema_is_refused_and_never_fetched(schema_api, fetch_log):
    url, asked = fetch_log
    body = json.dumps({"schema": {"$schema": f"{url}/meta", "type": "object"}}).encode()

    response = schema_api.client.generic("PUT", "/api/v1/event-types/a.b/schema", body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "schema.$schema"
    assert asked == []  # jsonschema-rs's meta-validation would have fetched it
    assert not EventType.objects.exists()


def test_a_refused_version_of_an_existing_type_changes_nothing(schema_api):
    first = put(b'{"type": "object", "properties": {"n": {"type": "integer"}}}')
    registered = schema_api.client.generic(
        "PUT", "/api/v1/event-types/a.b/schema", first, content_type="application/json"
    )
    assert registered.status_code == 201
    narrowed = put(b'{"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}')

    response = schema_api.client.generic("PUT", "/api/v1/event-types/a.b/schema", narrowed,
                                         content_type="application/json")  # fmt: skip

    assert response.status_code == 409
    assert [e["code"] for e in response.json()["errors"]] == ["incompatible_schema"]
    assert list(EventSchema.objects.values_list("version", flat=True)) == [1]
    assert Event.objects.filter(type__name="auditsvc.schema.registered").count() == 1


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 30

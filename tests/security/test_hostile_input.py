"""Hostile and clumsy input, table-driven: every case answers 4xx in the error shape (or, for a
filter value that is merely strange, an empty 200), and nothing is stored. Extreme times are in
test_hostile_times, schema bodies in test_hostile_schemas, the admin's forms in test_hostile_admin.

The bodies go through production's write path: group commit on, no wrapping test transaction
(the in-transaction shortcut fails the test if taken), so what a case stores is committed for
real. The query cases write nothing and run in a test transaction."""

from __future__ import annotations

import gzip
import json

import pytest

from events.models import Event
from tests.factories import CustomerFactory

URL = "/api/v1/events"
BIG_ARRAY = {"type": "a.b", "payload": {"items": list(range(10_000))}}

# (name, body bytes, extra headers, expected status, expected code)
POST_CASES: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("truncated JSON", b'{"type": "a.b"', {}, 400, "malformed_json"),
    ("trailing garbage", b'{"type": "a.b"} x', {}, 400, "malformed_json"),
    ("two documents", b'{"type": "a.b"}{"type": "a.b"}', {}, 400, "malformed_json"),
    ("invalid UTF-8", b'{"type": "a.b", "actor": "\xc3\x28"}', {}, 400, "malformed_json"),
    ("overlong UTF-8", b'{"type": "a.b", "actor": "\xc0\xaf"}', {}, 400, "malformed_json"),
    ("lone surrogate escape", b'{"type": "a.b", "actor": "\\ud800"}', {}, 400, "malformed_json"),
    ("reversed surrogates", b'{"type": "a.b", "actor": "\\udc00\\ud800"}', {}, 400, "malformed_json"),
    ("NaN", b'{"type": "a.b", "payload": {"x": NaN}}', {}, 400, "malformed_json"),
    ("-Infinity", b'{"type": "a.b", "payload": {"x": -Infinity}}', {}, 400, "malformed_json"),
    ("huge exponent", b'{"type": "a.b", "payload": {"x": 1e999}}', {}, 400, "malformed_json"),
    ("duplicate top-level key", b'{"type": "a.b", "type": "c.d"}', {}, 400, "duplicate_key"),
    ("duplicate payload key", b'{"type": "a.b", "payload": {"x": 1, "x": 2}}', {}, 400, "duplicate_key"),
    (
        "duplicate key in a batch",
        b'{"events": [{"type": "a.b", "actor": "a", "actor": "b"}]}',
        {},
        400,
        "duplicate_key",
    ),
    (
        "deep nesting 33",
        json.dumps({"type": "a.b", "payload": json.loads('{"a":' * 33 + "1" + "}" * 33)}).encode(),
        {},
        400,
        "nesting_too_deep",
    ),
    (  # beyond orjson's 254 levels of output: once a 500
        "deep nesting 300",
        b'{"type": "a.b", "payload": ' + b'{"a":' * 300 + b"1" + b"}" * 300 + b"}",
        {},
        400,
        "nesting_too_deep",
    ),
    (  # parsed by orjson (limit 1,024), beyond the stdlib's recursion limit in the duplicate-key check
        "deep nesting 1000 in a batch",
        b'{"events": [{"type": "a.b", "payload": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1000 + b"}]}",
        {},
        400,
        "nesting_too_deep",
    ),
    (
        "deep nesting 2000",
        b'{"type": "a.b", "payload": ' + b'{"a":' * 2000 + b"1" + b"}" * 2000 + b"}",
        {},
        400,
        "malformed_json",
    ),
    ("deep arrays", b'{"type": "a.b", "payload": {"a": ' + b"[" * 40 + b"]" * 40 + b"}}", {}, 400, "nesting_too_deep"),
    ("NUL in type", json.dumps({"type": "a\u0000b"}).encode(), {}, 400, "null_character"),
    ("NUL in customer", json.dumps({"type": "a.b", "customer": "\u0000"}).encode(), {}, 400, "null_character"),
    (
        "NUL deep in payload",
        json.dumps({"type": "a.b", "payload": {"a": [{"b": "x\u0000"}]}}).encode(),
        {},
        400,
        "null_character",
    ),
    (
        "escaped backslash-u0000 text is fine",
        json.dumps({"type": "a.b", "payload": {"a": "\\u0000"}}).encode(),
        {},
        201,
        "",
    ),
    ("emoji in type", json.dumps({"type": "billing.💸"}).encode(), {}, 400, "invalid_event_type"),
    ("RTL override in type", json.dumps({"type": "a.\u202eb"}).encode(), {}, 400, "invalid_event_type"),
    ("path traversal type", json.dumps({"type": "../../etc/passwd"}).encode(), {}, 400, "invalid_event_type"),
    ("SQL in type", json.dumps({"type": "a'; DROP TABLE events_event; --"}).encode(), {}, 400, "invalid_event_type"),
    ("HTML in type", json.dumps({"type": "<script>alert(1)</script>"}).encode(), {}, 400, "invalid_event_type"),
    ("type is null", b'{"type": null}', {}, 400, "required"),
    ("type is an object", b'{"type": {"name": "a.b"}}', {}, 400, "wrong_type"),
    ("type is a boolean", b'{"type": true}', {}, 400, "wrong_type"),
    ("payload is null-string", b'{"type": "a.b", "payload": "null"}', {}, 400, "wrong_type"),
    ("payload is a number", b'{"type": "a.b", "payload": 5}', {}, 400, "wrong_type"),
    ("occurred_at as epoch", b'{"type": "a.b", "occurred_at": 1700000000}', {}, 400, "invalid_datetime"),
    ("occurred_at year 0", b'{"type": "a.b", "occurred_at": "0000-01-01T00:00:00Z"}', {}, 400, "invalid_datetime"),
    (
        "occurred_at year 10000",
        b'{"type": "a.b", "occurred_at": "10000-01-01T00:00:00Z"}',
        {},
        400,
        "invalid_datetime",
    ),
    ("occurred_at hour 24", b'{"type": "a.b", "occurred_at": "2026-01-01T24:00:00Z"}', {}, 400, "invalid_datetime"),
    (
        "occurred_at offset +25:00",
        b'{"type": "a.b", "occurred_at": "2026-01-01T10:00:00+25:00"}',
        {},
        400,
        "invalid_datetime",
    ),
    ("occurred_at far future", b'{"type": "a.b", "occurred_at": "2999-01-01T00:00:00Z"}', {}, 400, "in_future"),
    ("unknown field 'source'", b'{"type": "a.b", "source": "other-service"}', {}, 400, "unknown_field"),
    (
        "unknown field 'received_at'",
        b'{"type": "a.b", "received_at": "2026-01-01T00:00:00Z"}',
        {},
        400,
        "unknown_field",
    ),
    ("batch with extra field", b'{"events": [], "source": "x"}', {}, 400, "unknown_field"),
    ("batch is not a list", b'{"events": "a.b"}', {}, 400, "wrong_type"),
    ("batch of nulls", b'{"events": [null, null]}', {}, 400, "wrong_type"),
    ("10,000-element payload array", json.dumps(BIG_ARRAY).encode(), {}, 201, ""),
    (
        "identity without id",
        b'{"type": "a.b", "customer": "c", "customer_identities": [{"system": "s"}]}',
        {},
        400,
        "required",
    ),
    (
        "21 identities",
        json.dumps(
            {"type": "a.b", "customer": "c", "customer_identities": [{"system": "s", "id": str(n)} for n in range(21)]}
        ).encode(),
        {},
        400,
        "too_many_identities",
    ),
    ("huge integer", b'{"type": "a.b", "payload": {"n": 18446744073709551616}}', {}, 400, "number_out_of_range"),
    # jsonb keeps a number's digits: 1e300 would read back as a 301-digit integer, once a 500 on every read
    ("float 1e300", b'{"type": "a.b", "payload": {"x": 1e300}}', {}, 400, "number_out_of_range"),
    (
        "float -1e300 in a batch",
        b'{"events": [{"type": "a.b", "payload": {"x": [-1e300]}}]}',
        {},
        400,
        "number_out_of_range",
    ),
    ("float 9.3e18, beyond 2^63", b'{"type": "a.b", "payload": {"x": 9.3e18}}', {}, 400, "number_out_of_range"),
    ("float 1.7e308", b'{"type": "a.b", "payload": {"x": 1.7e308}}', {}, 400, "number_out_of_range"),
    (
        "CloudEvent data 1e300",
        b'{"specversion": "1.0", "id": "1", "source": "s", "type": "a.b", "data": {"x": 1e300}}',
        {"Content-Type": "application/cloudevents+json"},
        400,
        "number_out_of_range",
    ),
    ("float 9.2e18, within 2^63", b'{"type": "a.b", "payload": {"x": 9.2e18}}', {}, 201, ""),
    ("float 1e-300", b'{"type": "a.b", "payload": {"x": 1e-300}}', {}, 201, ""),
    ("idempotency header too long", b'{"type": "a.b"}', {"Idempotency-Key": "k" * 300}, 400, "invalid"),
    (
        "Content-Encoding lie: gzip on plain JSON",
        b'{"type": "a.b"}',
        {"Content-Encoding": "gzip"},
        400,
        "malformed_body",
    ),
    ("Content-Encoding: br", b'{"type": "a.b"}', {"Content-Encoding": "br"}, 415, "unsupported_content_encoding"),
    ("truncated gzip", gzip.compress(b'{"type": "a.b"}')[:-6], {"Content-Encoding": "gzip"}, 400, "malformed_body"),
    (
        "gzip bomb",
        gzip.compress(b'{"type": "a.b", "payload": {"x": "' + b"a" * 6_000_000 + b'"}}'),
        {"Content-Encoding": "gzip"},
        413,
        "body_too_large",
    ),
    ("honest gzip", gzip.compress(b'{"type": "gzipped.event"}'), {"Content-Encoding": "gzip"}, 201, ""),
]


@pytest.mark.parametrize(("name", "body", "headers", "status", "code"), POST_CASES, ids=[c[0] for c in POST_CASES])
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("production_write_path")
def test_hostile_post_bodies(api, name, body, headers, status, code):
    headers = dict(headers)
    content_type = headers.pop("Content-Type", "application/json")
    response = api.client.generic("POST", URL, body, content_type=content_type, headers=headers)

    assert response.status_code == status, response.content[:500]
    if status >= 400:
        errors = response.json()["errors"]
        assert code in [e["code"] for e in errors], errors
        assert all(set(e) == {"field", "code", "message"} for e in errors)
        assert Event.objects.count() == 0
    else:  # committed by the group committer, and it reads back as it was answered
        stored = Event.objects.get()
        assert str(stored.id) == response.json()["id"]
        listed = api.client.get(URL)
        assert listed.status_code == 200
        assert listed.json()["results"][0]["payload"] == response.json()["payload"]


@pytest.mark.parametrize(
    ("content_type", "status"),
    [("text/plain", 415), ("application/x-www-form-urlencoded", 415), ("multipart/form-data; boundary=x", 415),
     ("application/json; charset=utf-8", 201), ("APPLICATION/JSON", 201)],
)  # fmt: skip
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("production_write_path")
def test_content_types(api, content_type, status):
    response = api.client.generic("POST", URL, b'{"type": "a.b"}', content_type=content_type)

    assert response.status_code == status


# (parameter, value, expected status): strange but legal filter values are just values (200, no
# match); invalid ones name the parameter in a 400.
QUERY_CASES = [
    ("type", "' OR '1'='1", 200), ("type", "../../../etc/passwd", 200), ("type", "<img src=x onerror=alert(1)>", 200),
    ("source", "'; DROP TABLE events_event; --", 200), ("customer", "stripe:' OR 1=1 --", 200),
    ("customer", ":", 200), ("actor", "\u202eevil", 200), ("actor", "😀" * 50, 200),
    ("q", "!!! ||| &&& :*", 200), ("q", "'\"\\", 200), ("type_prefix", "%", 200), ("type_prefix", "_", 200),
    ("payload.a.b", "' OR 1=1", 200), ("payload.a", "{\"$gt\": 1}", 200), ("payload.a", "1e300", 200),
    ("payload", '{"a": "\\u0000"}', 400), ("payload", '{"a": 1e300}', 400), ("payload", '{"a": [-9.3e18]}', 400),
    ("payload", '{"a": 18446744073709551616}', 400),
    ("occurred_after", "2026-01-01'; --", 400), ("occurred_after", "0000-00-00", 400),
    ("received_before", "9999999999", 400), ("page_size", "-1", 400), ("page_size", "1e3", 400),
    ("page", "99999999999999999999999", 400), ("ordering", "occurred_at; DROP TABLE x", 400),
    ("cursor", "../../etc/passwd", 400), ("cursor", "A" * 5000, 400), ("payload", "[" * 5000, 400),
    ("../../etc/passwd", "x", 400), ("type\x00", "x", 400),
]  # fmt: skip


@pytest.mark.parametrize(("parameter", "value", "status"), QUERY_CASES)
def test_hostile_query_parameters(api, parameter, value, status):
    CustomerFactory.create(external_id="cus_1")  # the timeline exists: its filters are reached
    for path in (URL, "/api/v1/customers/cus_1/events"):
        response = api.client.get(path, {parameter: value})
        assert response.status_code == status, (path, parameter, value, response.content[:300])
        body = response.json()
        if status == 400:
            assert body["errors"][0]["field"] and body["errors"][0]["code"]
        else:
            assert body["results"] == []
    assert Event.objects.count() == 0


def test_the_corpus_is_large_enough():
    assert len(POST_CASES) + len(QUERY_CASES) >= 60

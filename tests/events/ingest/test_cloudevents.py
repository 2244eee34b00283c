"""CloudEvents 1.0 over HTTP: structured, batch and binary modes, built by the CloudEvents SDK
where it can, with the native format's validation, limits and error shape."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from cloudevents.v1.conversion import to_binary, to_structured
from cloudevents.v1.http import CloudEvent
from django.contrib.auth.models import Group
from django.db import connection

from events.ingest.drain import Drainer
from events.integrity.sealing import seal_events
from events.integrity.verification import verify_integrity
from events.models import Event
from tests.database import triggers_off, truncate
from tests.events.ingest.test_import_export import run_import, write_lines
from tests.events.test_schemas import CHARGED, put_schema, registrar  # noqa: F401 - a fixture

# Production's write path: every single event through the group committer (issue 24, item 8).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("production_write_path")]

URL = "/api/v1/events"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


def charge(**attributes: Any) -> CloudEvent:
    return CloudEvent(
        {"type": "billing.charged", "source": "/billing/eu-1", "id": "ch-1", "subject": "cus_7",
         "time": "2026-11-30T10:00:00Z", **attributes},
        {"amount": 12.5, "currency": "EUR"},
    )  # fmt: skip


def post_structured(api: Any, document: Any, **headers: str) -> Any:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return api.client.post(URL, body, content_type=STRUCTURED, headers=headers)


def post_batch(api: Any, documents: Any, **headers: str) -> Any:
    return api.client.post(URL, json.dumps(documents).encode(), content_type=BATCH, headers=headers)


def post_binary(api: Any, headers: dict[str, str], body: bytes, content_type: str = "application/json") -> Any:
    return api.client.post(URL, body, content_type=content_type, headers=headers)


def errors(response: Any) -> list[tuple[str, str]]:
    """(field, code) per error; "" for an error about the whole request."""
    return [(error["field"] or "", error["code"]) for error in response.json()["errors"]]


def document(**attributes: Any) -> dict[str, Any]:
    base = {"specversion": "1.0", "id": "ev-1", "source": "/shop", "type": "order.placed", "data": {"n": 1}}
    return {k: v for k, v in {**base, **attributes}.items() if v is not None}


def test_structured_mode_maps_every_attribute_and_records_the_source_as_origin(api, auditors_group):
    headers, body = to_structured(charge(actor="ana", description="a charge"))

    response = api.client.post(URL, body, content_type=headers["content-type"])

    assert response.status_code == 201, response.json()
    stored = Event.objects.select_related("source", "customer").get()
    assert stored.idempotency_key == "ch-1" and stored.customer.external_id == "cus_7"  # type: ignore[union-attr]
    assert stored.occurred_at.isoformat() == "2026-11-30T10:00:00+00:00"
    assert stored.payload == {"amount": 12.5, "currency": "EUR"}
    assert (stored.actor, stored.description) == ("ana", "a charge")
    assert stored.origin == "/billing/eu-1"
    assert stored.source.slug == api.source.slug  # the key decides the source, never the event
    assert response.json()["origin"] == "/billing/eu-1" and response.json()["source"] == "billing"
    assert "/billing/eu-1" in admin_page_of(stored, auditors_group)


def admin_page_of(event: Event, auditors_group: Group) -> str:
    from django.contrib.auth.models import User  # noqa: PLC0415
    from django.test import Client  # noqa: PLC0415
    from django.urls import reverse  # noqa: PLC0415

    auditor = User.objects.create_user("auditor", is_staff=True)
    auditor.groups.add(auditors_group)
    client = Client()
    client.force_login(auditor)
    return client.get(reverse("admin:events_event_change", args=[event.pk])).content.decode()


def test_a_retry_is_the_same_event_and_the_same_id_from_another_origin_is_a_conflict(api):
    _, body = to_structured(charge())
    first = api.client.post(URL, body, content_type=STRUCTURED)
    again = api.client.post(URL, body, content_type=STRUCTURED)
    other_origin = post_structured(api, {**json.loads(body), "source": "/billing/us-1"})

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert other_origin.status_code == 409 and errors(other_origin) == [("id", "idempotency_key_reused")]
    assert Event.objects.count() == 1


def test_binary_mode_takes_the_attributes_from_headers_and_the_body_as_data(api):
    headers, body = to_binary(charge(subject="cüs 7"))  # non-ASCII: percent-encoded by the SDK
    assert "content-type" not in headers  # the SDK sends none for a dict: taken as JSON

    response = api.client.generic("POST", URL, body, content_type="", headers=headers)

    assert response.status_code == 201, response.json()
    stored = Event.objects.select_related("customer").get()
    assert stored.customer.external_id == "cüs 7"  # type: ignore[union-attr]
    assert (stored.idempotency_key, stored.origin, stored.payload) == (
        "ch-1", "/billing/eu-1", {"amount": 12.5, "currency": "EUR"},
    )  # fmt: skip


def test_binary_mode_errors_name_the_headers_and_the_body(api):
    headers = {"ce-specversion": "1.0", "ce-id": "b-1", "ce-source": "/s", "ce-type": "order.placed"}

    bad_time = post_binary(api, {**headers, "ce-time": "yesterday"}, b"{}")
    not_object = post_binary(api, headers, b"[1, 2]")
    not_json_type = post_binary(api, headers, b"<xml/>", content_type="application/xml")
    unknown = post_binary(api, {**headers, "ce-color": "red"}, b"{}")
    no_type = post_binary(api, {k: v for k, v in headers.items() if k != "ce-type"}, b"{}")

    assert bad_time.status_code == 400 and errors(bad_time) == [("ce-time", "invalid_datetime")]
    assert errors(not_object) == [("data", "wrong_type")]
    assert not_json_type.status_code == 415 and errors(not_json_type) == [("", "unsupported_media_type")]
    assert errors(unknown) == [("ce-color", "unknown_field")]
    assert errors(no_type) == [("ce-type", "required")]
    assert Event.objects.count() == 0


def test_a_batch_is_stored_all_or_nothing_with_errors_named_by_index_and_attribute(api):
    good = [document(id=f"b-{n}", data={"n": n}) for n in range(3)]
    bad = [good[0], document(id="b-x", time="2026-02-30T10:00:00Z", data={"deep": "\u0000"}), good[2]]

    refused = post_batch(api, bad)
    stored = post_batch(api, good)
    again = post_batch(api, good)

    assert refused.status_code == 400
    assert sorted(errors(refused)) == [("[1].data", "null_character"), ("[1].time", "invalid_datetime")]
    assert stored.status_code == 201 and stored.json()["created"] == 3
    assert again.status_code == 200 and again.json()["duplicates"] == 3
    assert sorted(str(key) for key in Event.objects.values_list("idempotency_key", flat=True)) == ["b-0", "b-1", "b-2"]


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        (
            {"specversion": None, "id": None, "source": None},
            [("id", "required"), ("source", "required"), ("specversion", "required")],
        ),
        ({"specversion": "0.3"}, [("specversion", "unsupported_specversion")]),
        ({"time": "2026-11-30 10:00"}, [("time", "invalid_datetime")]),
        ({"time": "2999-01-01T00:00:00Z"}, [("time", "in_future")]),
        ({"data": [1]}, [("data", "wrong_type")]),
        ({"data": None, "data_base64": "AAEC"}, [("data", "unsupported_data")]),
        ({"datacontenttype": "text/plain"}, [("datacontenttype", "unsupported_datacontenttype")]),
        ({"color": "red"}, [("color", "unknown_field")]),
        ({"source": 7, "subject": ""}, [("source", "wrong_type"), ("subject", "blank")]),
        ({"source": "x" * 501}, [("source", "invalid")]),
        ({"type": "bad type!"}, [("type", "invalid_event_type")]),
        ({"type": "auditsvc.read"}, [("type", "reserved_type")]),
        ({"id": "i" * 201}, [("id", "too_long")]),
        ({"data": {"n": 2**60}}, [("data", "number_out_of_range")]),
    ],
)
def test_bad_structured_events_get_field_errors_named_by_attribute(api, attributes, expected):
    response = post_structured(api, document(**attributes))

    assert response.status_code == 400
    assert sorted(errors(response)) == sorted(expected)
    assert Event.objects.count() == 0


def test_tracing_extensions_are_accepted_and_not_stored(api):
    response = post_structured(api, document(traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))

    assert response.status_code == 201
    assert "traceparent" not in json.dumps(Event.objects.values().get(), default=str)


def test_the_native_limits_hold_for_every_mode(api, settings):
    settings.AUDITSVC_BATCH_MAX_EVENTS = 2
    settings.AUDITSVC_MAX_BODY_BYTES = 2_000

    too_many = post_batch(api, [document(id=f"m-{n}") for n in range(3)])
    empty = post_batch(api, [])
    not_a_list = post_batch(api, document())
    header_on_batch = post_batch(api, [document()], **{"Idempotency-Key": "k"})
    too_large = post_structured(api, document(data={"text": "x" * 3_000}))
    gzip_bomb = api.client.post(
        URL, gzip.compress(json.dumps(document(data={"text": "x" * 50_000})).encode()), content_type=STRUCTURED,
        headers={"Content-Encoding": "gzip"},
    )  # fmt: skip
    duplicate_key = post_structured(api, b'{"specversion": "1.0", "id": "a", "id": "b", "source": "/s", "type": "t"}')
    malformed = post_structured(api, b'{"specversion": ')
    deep = post_structured(api, document(data=json.loads('{"a":' * 40 + "1" + "}" * 40)))
    binary_too_large = post_binary(
        api,
        {"ce-specversion": "1.0", "ce-id": "x", "ce-source": "/s", "ce-type": "t"},
        b'{"t": "' + b"x" * 3_000 + b'"}',
    )
    conflicting_header = post_structured(api, document(), **{"Idempotency-Key": "another"})

    assert errors(too_many) == [("", "too_many_events")] and errors(empty) == [("", "empty_batch")]
    assert errors(not_a_list) == [("", "invalid_body")]
    assert errors(header_on_batch) == [("Idempotency-Key", "header_not_allowed")]
    assert (too_large.status_code, gzip_bomb.status_code, binary_too_large.status_code) == (413, 413, 413)
    assert errors(duplicate_key) == [("", "duplicate_key")] and errors(malformed) == [("", "malformed_json")]
    assert errors(deep) == [("data", "nesting_too_deep")]
    assert errors(conflicting_header) == [("id", "conflicting_idempotency_key")]
    assert Event.objects.count() == 0


def test_a_structured_body_needs_its_own_media_type(api):
    as_batch = api.client.post(URL, json.dumps(document()).encode(), content_type=BATCH)
    as_json = api.post_json(URL, document())  # the native format has no such fields

    assert errors(as_batch) == [("", "invalid_body")]
    assert as_json.status_code == 400 and ("specversion", "unknown_field") in errors(as_json)


def test_schemas_are_enforced_and_dataschema_chooses_the_version(api, registrar):  # noqa: F811
    put_schema(registrar, "billing.charged", CHARGED, validation="enforce")
    widened = {**CHARGED, "properties": {**CHARGED["properties"], "note": {"type": "string"}}}
    put_schema(registrar, "billing.charged", widened)
    versions = registrar.client.get("/api/v1/event-types/billing.charged/schemas").json()
    first = registrar.client.get(versions[0]["dataschema"]).json()

    violation = post_structured(api, document(type="billing.charged", data={"amount": "12", "currency": "EUR"}))
    batch_violation = post_batch(api, [document(type="billing.charged", data={"amount": -1, "currency": "EUR"})])
    pinned = post_structured(api, document(
        type="billing.charged", dataschema=f"https://audit.example{versions[0]['dataschema']}",
        data={"amount": 1, "currency": "EUR"},
    ))  # fmt: skip
    latest = post_structured(api, document(id="ev-2", type="billing.charged", data={"amount": 2, "currency": "EUR"}))
    missing = post_structured(api, document(
        id="ev-3", type="billing.charged", dataschema="/api/v1/event-types/billing.charged/schemas/9",
    ))  # fmt: skip
    other_type = post_structured(api, document(
        id="ev-4", type="billing.charged", dataschema="/api/v1/event-types/billing.refunded/schemas/1",
    ))  # fmt: skip
    foreign = post_structured(api, document(
        id="ev-5", type="billing.charged", dataschema="https://schemas.example/charge.json",
        data={"amount": 5, "currency": "USD"},
    ))  # fmt: skip

    assert (first["version"], first["schema"]) == (1, CHARGED)
    assert violation.status_code == 400 and errors(violation) == [("data.amount", "schema_violation")]
    assert errors(batch_violation) == [("[0].data.amount", "schema_violation")]
    assert pinned.status_code == 201 and latest.status_code == 201 and foreign.status_code == 201
    checked = Event.objects.filter(type__name="billing.charged").values_list("idempotency_key", "schema_version")
    assert dict(checked) == {"ev-1": 1, "ev-2": 2, "ev-5": 2}
    assert missing.status_code == 400 and errors(missing) == [("dataschema", "unknown_schema_version")]
    assert errors(other_type) == [("dataschema", "dataschema_type_mismatch")]


def test_the_origin_is_hashed_so_that_changing_it_is_found(api):
    post_structured(api, document())
    post_batch(api, [document(id="ev-2", source="https://shop.example/eu")])
    api.post_json(URL, {"type": "order.placed"})  # native: no origin, the hash of before
    seal_events(lag_seconds=0)
    assert verify_integrity().ok

    with triggers_off(), connection.cursor() as cursor:
        cursor.execute("UPDATE events_event SET origin = '/elsewhere' WHERE idempotency_key = 'ev-2'")
    report = verify_integrity()

    assert [finding.kind for finding in report.findings] == ["event_modified"]


def test_stream_mode_carries_the_origin_to_the_stored_event(api, stream_mode):
    _, body = to_structured(charge())

    accepted = api.client.post(URL, body, content_type=STRUCTURED)
    Drainer().run(once=True)

    assert accepted.status_code == 202
    stored = api.client.get(f"{URL}/{accepted.json()['id']}").json()
    assert stored["origin"] == "/billing/eu-1" and stored["hash"] == accepted.json()["hash"]


def test_an_export_as_cloudevents_gives_the_origin_back_and_imports_to_the_same_events(make_client, tmp_path):
    api = make_client()
    post_structured(api, document(subject="cus_1"))
    api.post_json(URL, {"type": "order.shipped", "idempotency_key": "native-1"})
    before = {e.id: (e.hash, e.origin, e.idempotency_key) for e in Event.objects.all()}

    response = api.client.get(f"{URL}/export", {"format": "cloudevents"})
    lines = b"".join(response.streaming_content).decode().splitlines()
    exported = {d["type"]: d for d in map(json.loads, lines)}
    truncate("events_event", "events_pendingseal", "events_idempotencykey")  # an empty event store
    status, out = run_import(str(write_lines(tmp_path / "ce.ndjson", lines)), "--format", "cloudevents")

    placed, shipped = exported["order.placed"], exported["order.shipped"]
    assert (placed["source"], placed["auditsvcorigin"], placed["auditsvcsource"]) == ("/shop", "/shop", "billing")
    assert shipped["source"] == "billing" and "auditsvcorigin" not in shipped
    assert status == 0, out
    assert {e.id: (e.hash, e.origin, e.idempotency_key) for e in Event.objects.all()} == before

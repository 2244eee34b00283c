"""A ciphertext decrypts only in the event it was made for, at a path its type marks; a sender
cannot pass a string off as protected; an import skips protection only when it proves its
stored form (issue 25, items 2 and 3)."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from events.data_keys import data_keys_for_writing
from events.ids import uuid7, uuid7_time
from events.ingest.drain import Drainer
from events.ingest.validation import parse_event
from events.ingest.write import hash_for, ingest_events
from events.integrity.canonical import canonical_json
from events.models import Event, Source
from events.protection import CIPHER_V1, UNREADABLE, _aad_v1
from tests.database import triggers_off
from tests.events.ingest.test_import_export import run_import, write_lines
from tests.events.test_privacy import PLAIN, URL, marked, sign_up  # noqa: F401 - a fixture
from tests.events.test_schemas import registrar  # noqa: F401 - a fixture

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("production_write_path")]


def errors(response: Any) -> list[tuple[str, str]]:
    return [(error["field"], error["code"]) for error in response.json()["errors"]]


def stored_as_before(source: Source, body: dict[str, Any]) -> str:
    """An event stored exactly as given, as the write path stores a stream entry the API accepted
    (or stored before these rules): nothing refused, checked or protected. Its id."""
    event_id, now = uuid7(), timezone.now()
    item = replace(parse_event(body), event_id=event_id, received_at=now)
    item = replace(item, hash=hash_for(source=source, item=item, event_id=event_id, received_at=now))
    ingest_events(source=source, items=[item], is_batch=False)
    return str(event_id)


def v1_ciphertext(customer: str, path: tuple[str, ...], value: Any) -> str:
    """A personal value as the log wrote it before ciphertexts were bound to their event."""
    key_id, cipher = data_keys_for_writing({customer})[customer]
    nonce = os.urandom(12)
    sealed = cipher.encrypt(nonce, canonical_json(value), _aad_v1(customer, path))
    return f"{CIPHER_V1}{key_id}:{base64.b64encode(nonce + sealed).decode()}"


@pytest.fixture
def intruder(make_client: Any) -> Any:
    """Another service, allowed to send events and read its own."""
    return make_client("intruder", scopes=("ingest", "read:own"))


def test_a_ciphertext_reposted_by_another_service_is_refused_and_never_reads_back_plain(api, marked, intruder):  # noqa: F811
    stolen = sign_up(api).json()["payload"]["email"]  # as exports, archives and proofs carry it

    at_marked = intruder.post_json(URL, {"type": "customer.signed_up", "customer": "cus_1",
                                         "payload": {**PLAIN, "email": stolen}})  # fmt: skip
    at_unmarked = intruder.post_json(URL, {"type": "note.taken", "customer": "cus_1", "payload": {"x": stolen}})

    assert at_marked.status_code == at_unmarked.status_code == 400
    assert errors(at_marked) == [("payload.email", "protected_value_prefix")]
    assert errors(at_unmarked) == [("payload.x", "protected_value_prefix")]
    # Had one got in (stored before this rule, or by a way not yet thought of), its read binds it
    # to its own event: at a marked path it does not open, at an unmarked one it is not opened.
    marked_id = stored_as_before(intruder.source, {"type": "customer.signed_up", "customer": "cus_1",
                                                   "payload": {**PLAIN, "email": stolen}})  # fmt: skip
    unmarked_id = stored_as_before(intruder.source, {"type": "note.taken", "customer": "cus_1",
                                                     "payload": {"email": stolen}})  # fmt: skip
    read_marked = intruder.client.get(f"{URL}/{marked_id}")
    read_unmarked = intruder.client.get(f"{URL}/{unmarked_id}")
    listed = intruder.client.get(URL).json()["results"]

    assert read_marked.status_code == read_unmarked.status_code == 200
    assert read_marked.json()["payload"]["email"] == UNREADABLE
    assert read_unmarked.json()["payload"] == {"email": stolen}
    assert {event["id"] for event in listed} == {marked_id, unmarked_id}
    assert "ana@example.com" not in json.dumps([read_marked.json(), read_unmarked.json(), listed])


def test_a_v1_ciphertext_still_reads_at_a_marked_path_and_only_there(api, marked):  # noqa: F811
    old = v1_ciphertext("cus_1", ("email",), "ana@example.com")
    at_marked = stored_as_before(api.source, {"type": "customer.signed_up", "customer": "cus_1",
                                              "payload": {**PLAIN, "email": old}})  # fmt: skip
    at_unmarked = stored_as_before(api.source, {"type": "note.taken", "customer": "cus_1", "payload": {"email": old}})

    assert api.client.get(f"{URL}/{at_marked}").json()["payload"]["email"] == "ana@example.com"
    assert api.client.get(f"{URL}/{at_unmarked}").json()["payload"] == {"email": old}  # as stored


def test_a_string_that_looks_protected_is_refused_on_every_ingest_path(api, marked, tmp_path):  # noqa: F811
    looks = {"type": "note.taken", "customer": "cus_1", "payload": {"n": 1, "user": {"email": "hmac-sha256:00"}}}
    batch = api.post_json(URL, {"events": [{"type": "note.taken"}, {**looks, "payload": {"x": ["aes-gcm:v9:1"]}}]})
    cloud = api.client.post(URL, json.dumps({"specversion": "1.0", "id": "c-1", "source": "/x", "type": "note.taken",
                                             "data": {"x": "aes-gcm:v2:1:AAAA"}}),
                            content_type="application/cloudevents+json")  # fmt: skip
    lines = [json.dumps(looks), json.dumps({"type": "note.taken", "payload": {"ok": "aes-gcm is fine mid-string"}})]
    code, out = run_import(str(write_lines(tmp_path / "e.ndjson", lines)), "--source", "billing", "--workers", "1")
    rejects = [json.loads(line) for line in (tmp_path / "e.ndjson.rejects.ndjson").read_text().splitlines()]
    ce_lines = [json.dumps({"specversion": "1.0", "id": "c-2", "source": "/x", "type": "note.taken",
                            "data": {"x": "hmac-sha256:ff"}})]  # fmt: skip
    ce_path = write_lines(tmp_path / "ce.ndjson", ce_lines)
    run_import(str(ce_path), "--source", "billing", "--format", "cloudevents", "--workers", "1")
    ce_rejects = [json.loads(line) for line in (tmp_path / "ce.ndjson.rejects.ndjson").read_text().splitlines()]

    assert errors(api.post_json(URL, looks)) == [("payload.user.email", "protected_value_prefix")]
    assert errors(batch) == [("events[1].payload.x[0]", "protected_value_prefix")]
    assert errors(cloud) == [("data.x", "protected_value_prefix")]
    assert "stored 1" in out and code != 0
    assert [(r["line"], [(e["field"], e["code"]) for e in r["errors"]]) for r in rejects] == [
        (1, [("payload.user.email", "protected_value_prefix")])
    ]
    assert [[e["code"] for e in r["errors"]] for r in ce_rejects] == [["protected_value_prefix"]]
    assert list(Event.objects.exclude(source__slug="auditsvc").values_list("type__name", flat=True)) == ["note.taken"]


def test_the_stream_accept_refuses_a_string_that_looks_protected(api, marked, stream_mode):  # noqa: F811
    refused = api.post_json(URL, {"type": "note.taken", "payload": {"x": "aes-gcm:v2:1:AAAA"}})
    accepted = sign_up(api)  # what the service protects itself passes, and drains

    Drainer().run(once=True)

    assert errors(refused) == [("payload.x", "protected_value_prefix")]
    assert accepted.status_code == 202
    assert api.client.get(f"{URL}/{accepted.json()['id']}").json()["payload"]["email"] == "ana@example.com"


# --- Item 3: an import skips checking and protection only when it proves its stored form ---------


def import_lines(tmp_path: Path, records: list[dict[str, Any]]) -> tuple[str, list[Any]]:
    path = write_lines(tmp_path / "e.ndjson", [json.dumps(record) for record in records])
    _, out = run_import(str(path), "--source", "billing", "--workers", "1")
    rejects = tmp_path / "e.ndjson.rejects.ndjson"
    return out, [json.loads(line) for line in rejects.read_text().splitlines()] if rejects.exists() else []


def test_an_imported_record_with_a_receipt_time_is_checked_and_protected_unless_it_proves_its_stored_form(
    api,
    marked,  # noqa: F811
    tmp_path,
):
    plain = {"type": "customer.signed_up", "customer": "cus_1", "received_at": "2026-11-01T10:00:00Z",
             "payload": PLAIN}  # fmt: skip
    event_id = uuid7()
    at = uuid7_time(event_id)  # the receipt time a record with only its id has
    assert at is not None
    with_id = {"type": "customer.signed_up", "customer": "cus_1", "id": str(event_id), "payload": PLAIN}
    # A hash anyone can compute over the plain record: it recomputes, but over no stored form.
    item = parse_event({k: v for k, v in with_id.items() if k != "id"})
    forged = hash_for(source=api.source, item=item, event_id=event_id, received_at=at)
    violating = {**plain, "payload": {**PLAIN, "age": "forty"}}

    out, rejects = import_lines(tmp_path, [plain, {**with_id, "hash": forged}, violating])

    assert "stored 2" in out, out
    assert [[(e["field"], e["code"]) for e in r["errors"]] for r in rejects] == [[("payload.age", "schema_violation")]]
    stored = Event.objects.filter(type__name="customer.signed_up")
    assert {e.received_at for e in stored} == {at, datetime(2026, 11, 1, 10, tzinfo=UTC)}  # each keeps its own
    assert all(e.payload["email"].startswith("aes-gcm:v2:") for e in stored)
    assert all(e.payload["national_id"].startswith("hmac-sha256:") for e in stored)
    assert Event.objects.get(id=event_id).hash != forged
    with connection.cursor() as cursor:
        cursor.execute("SELECT string_agg(e::text, ' ') FROM events_event e")
        assert "ana@example.com" not in str(cursor.fetchone()[0])
    read = api.client.get(f"{URL}/{event_id}").json()["payload"]
    assert read["email"] == "ana@example.com"  # bound to the id it kept


def test_a_genuine_export_reimported_is_stored_byte_identical(api, marked, tmp_path):  # noqa: F811
    original = sign_up(api).json()
    export = b"".join(api.client.get(f"{URL}/export").streaming_content).decode()
    line = next(line for line in export.splitlines() if original["id"] in line)
    before = Event.objects.values_list("payload", "hash", "received_at").get(id=original["id"])
    with triggers_off(), connection.cursor() as cursor:  # as if imported into another database
        cursor.execute("DELETE FROM events_event WHERE id = %s", [original["id"]])
        cursor.execute("DELETE FROM events_pendingseal WHERE event_id = %s", [original["id"]])

    _, out = run_import(str(write_lines(tmp_path / "x.ndjson", [line])), "--source", "billing", "--workers", "1")

    assert "stored 1" in out, out
    assert Event.objects.values_list("payload", "hash", "received_at").get(id=original["id"]) == before
    assert api.client.get(f"{URL}/{original['id']}").json()["payload"]["email"] == "ana@example.com"

"""Sensitive and personal payload fields: stored protected, found and read as the schema says,
and erased with the customer's data key while every hash and seal still verifies."""

from __future__ import annotations

from io import StringIO
from typing import Any

import orjson
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from rest_framework.test import APIClient

from customers.models import Customer
from events.ingest.drain import Drainer
from events.integrity.sealing import seal_events
from events.integrity.verification import verify_integrity
from events.integrity.verify_proof import check
from events.models import CustomerDataKey, Event, EventType
from events.protection import ERASED
from tests.events.test_schemas import put_schema, registrar, schema_key_of  # noqa: F401 - a fixture

# Production's write path: every single event through the group committer (issue 24, item 8).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("production_write_path")]

URL = "/api/v1/events"
SIGNED_UP: dict[str, Any] = {
    "type": "object",
    "properties": {
        "plan": {"type": "string"},
        "email": {"type": "string", "x-auditsvc": "personal"},
        "national_id": {"type": "string", "x-auditsvc": "sensitive"},
        "address": {"type": "object", "properties": {"city": {"type": "string", "x-auditsvc": "personal"}}},
        "devices": {"type": "array", "items": {"type": "object", "properties": {
            "ip": {"type": "string", "x-auditsvc": "personal"}, "model": {"type": "string"}}}},
        "age": {"type": "integer", "x-auditsvc": "personal"},
    },
}  # fmt: skip
PLAIN = {
    "plan": "pro", "email": "ana@example.com", "national_id": "756.1234.5678.97",
    "address": {"city": "Lisbon"}, "devices": [{"ip": "203.0.113.9", "model": "x1"}], "age": 41,
}  # fmt: skip


def stored_texts() -> str:
    """Everything the database holds of the events, as text."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT string_agg(e::text, ' ') FROM events_event e")
        return str(cursor.fetchone()[0])


def sign_up(api: Any, customer: str | None = "cus_1", **payload: Any) -> Any:
    body: dict[str, Any] = {"type": "customer.signed_up", "payload": {**PLAIN, **payload}}
    if customer:
        body["customer"] = customer
    return api.post_json(URL, body)


@pytest.fixture
def marked(registrar: Any) -> None:  # noqa: F811
    assert put_schema(registrar, "customer.signed_up", SIGNED_UP, validation="enforce").status_code == 201


def test_a_sensitive_value_is_stored_as_an_hmac_and_found_by_its_plain_value(api, marked):
    stored = sign_up(api).json()
    other = sign_up(api, customer="cus_2", national_id="111.2222.3333.44").json()

    assert "756.1234.5678.97" not in stored_texts()
    assert stored["payload"]["national_id"].startswith("hmac-sha256:")
    found = api.client.get(URL, {"payload.national_id": "756.1234.5678.97"}).json()["results"]
    assert [e["id"] for e in found] == [stored["id"]]
    assert api.client.get(URL, {"payload.national_id": "000"}).json()["results"] == []
    read = api.client.get(f"{URL}/{other['id']}").json()
    assert read["payload"]["national_id"] == other["payload"]["national_id"]  # never reversed on read


def test_a_personal_value_is_readable_before_erasure_and_erased_after_and_the_log_still_verifies(api, marked):
    ana = sign_up(api).json()
    bob = sign_up(api, customer="cus_2", email="bob@example.com").json()

    texts = stored_texts()
    assert not any(plain in texts for plain in ("ana@example.com", "Lisbon", "203.0.113.9", "bob@example.com"))
    assert ana["payload"]["email"].startswith("aes-gcm:v2:")  # the answer shows what is stored and hashed
    assert api.client.get(f"{URL}/{ana['id']}").json()["payload"] == {
        **PLAIN,
        "national_id": ana["payload"]["national_id"],
    }
    timeline = api.client.get("/api/v1/customers/cus_1/events").json()["results"]
    assert timeline[0]["payload"]["email"] == "ana@example.com"
    export = b"".join(api.client.get(f"{URL}/export").streaming_content).decode()
    assert ana["id"] in export and "ana@example.com" not in export  # exports carry the stored form

    seal_events(lag_seconds=0)
    Customer.objects.filter(external_id="cus_1").update(email="ana@example.com", display_name="Ana")
    call_command("erase_customer", "cus_1", "--yes", "--actor", "dpo@example.com", stdout=StringIO())

    erased = api.client.get(f"{URL}/{ana['id']}").json()["payload"]
    assert erased == {
        **PLAIN,
        "email": ERASED,
        "address": {"city": ERASED},
        "age": ERASED,
        "devices": [{"ip": ERASED, "model": "x1"}],
        "national_id": ana["payload"]["national_id"],
    }
    assert api.client.get(f"{URL}/{bob['id']}").json()["payload"]["email"] == "bob@example.com"
    report = verify_integrity()
    assert report.ok and report.events_checked >= 3, report.findings
    call_command("verify_events", stdout=(verified := StringIO()))  # exits non-zero on any finding
    assert "OK" in verified.getvalue()
    proof = api.client.get(f"{URL}/{ana['id']}/proof").json()
    assert all(passed for name, passed, _ in check(proof) if name != "signature")
    record = Event.objects.get(type__name="auditsvc.customer.erased")
    assert (record.customer.external_id, record.actor) == ("cus_1", "dpo@example.com")  # type: ignore[union-attr]
    (key_id,) = CustomerDataKey.objects.filter(customer="cus_1").values_list("id", flat=True)
    assert record.payload == {"data_keys_destroyed": 1, "data_key_ids": [key_id], "events": 1}
    assert Customer.objects.filter(external_id="cus_1", email="", display_name="").exists()


def test_a_customer_erased_gets_a_new_key_for_what_comes_after(api, marked):
    before = sign_up(api).json()
    call_command("erase_customer", "cus_1", "--yes", stdout=StringIO())
    after = sign_up(api, email="ana@new.example").json()

    assert api.client.get(f"{URL}/{before['id']}").json()["payload"]["email"] == ERASED
    assert api.client.get(f"{URL}/{after['id']}").json()["payload"]["email"] == "ana@new.example"


def test_personal_fields_need_a_customer_and_are_checked_before_they_are_protected(api, marked):
    anonymous = sign_up(api, customer=None)
    wrong_type = sign_up(api, age="forty")

    assert anonymous.status_code == 400
    assert {(e["field"], e["code"]) for e in anonymous.json()["errors"]} >= {("payload.email", "customer_required")}
    assert [(e["field"], e["code"]) for e in wrong_type.json()["errors"]] == [("payload.age", "schema_violation")]
    assert Event.objects.filter(type__name="customer.signed_up").count() == 0


def test_events_sent_before_the_type_had_a_schema_are_not_rewritten(api):
    early = api.post_json(URL, {"type": "customer.signed_up", "customer": "cus_1", "payload": PLAIN}).json()
    assert put_schema(schema_key_of(api), "customer.signed_up", SIGNED_UP).status_code == 201  # off: still protected

    late = sign_up(api).json()

    assert Event.objects.get(id=early["id"]).payload == PLAIN
    assert Event.objects.get(id=late["id"]).payload["email"].startswith("aes-gcm:v2:")


def test_a_marking_must_be_known_and_on_a_property(registrar):  # noqa: F811
    unknown = put_schema(registrar, "a.b", {"type": "object", "properties": {"x": {"x-auditsvc": "secret"}}})
    on_payload = put_schema(registrar, "a.c", {"type": "object", "x-auditsvc": "personal"})

    assert [(e["field"], e["code"]) for e in unknown.json()["errors"]] == [("schema.properties.x", "invalid_marking")]
    assert [(e["field"], e["code"]) for e in on_payload.json()["errors"]] == [("schema", "invalid_marking")]


def test_stream_mode_protects_the_fields_before_the_event_is_queued(api, marked, stream_mode):
    accepted = sign_up(api).json()

    Drainer().run(once=True)

    stored = Event.objects.get(id=accepted["id"])
    assert stored.hash == accepted["hash"] and stored.payload["email"].startswith("aes-gcm:v2:")
    assert api.client.get(f"{URL}/{accepted['id']}").json()["payload"]["email"] == "ana@example.com"


def test_erasing_an_unknown_customer_is_an_error(db):
    with pytest.raises(CommandError, match="No customer"):
        call_command("erase_customer", "nobody", "--yes")


def test_the_admin_shows_personal_fields_decrypted_beside_what_is_stored(api, marked, auditors_group):
    from django.contrib.auth.models import User  # noqa: PLC0415
    from django.test import Client  # noqa: PLC0415
    from django.urls import reverse  # noqa: PLC0415

    stored = sign_up(api).json()
    auditor = User.objects.create_user("auditor", is_staff=True)
    auditor.groups.add(auditors_group)
    client = Client()
    client.force_login(auditor)

    page = client.get(reverse("admin:events_event_change", args=[stored["id"]])).content.decode()
    customer_id = Event.objects.get(id=stored["id"]).customer_id
    before = client.get(reverse("admin:customers_customer_change", args=[customer_id])).content.decode()
    call_command("erase_customer", "cus_1", "--yes", stdout=StringIO())
    after = client.get(reverse("admin:customers_customer_change", args=[customer_id])).content.decode()

    assert "ana@example.com" in page and stored["payload"]["email"] in page
    assert "encrypted under its data key since" in before and "erased " not in before
    assert "erased 20" in after and "encrypted under" not in after


def test_a_read_record_keeps_the_hmac_of_a_value_sought_in_a_marked_field(api, marked):
    from events.access_log import flush_access_log  # noqa: PLC0415

    sign_up(api)
    api.client.get(URL, {"payload.national_id": "756.1234.5678.97", "payload.plan": "pro"})
    api.client.get(URL, {"payload": '{"email": "ana@example.com"}'})
    flush_access_log()

    records = [e.payload["filters"] for e in Event.objects.filter(type__name="auditsvc.read")]
    dotted = next(filters for filters in records if "payload.plan" in filters)
    containment = next(filters for filters in records if "payload" in filters)
    assert dotted["payload.national_id"].startswith("hmac-sha256:") and dotted["payload.plan"] == "pro"
    assert containment["payload"].startswith("hmac-sha256:")
    assert "756.1234.5678.97" not in stored_texts() and "ana@example.com" not in stored_texts()


def test_a_new_version_is_checked_against_stored_events_without_their_protected_fields(api, marked, registrar):  # noqa: F811
    sign_up(api)  # age, an integer, is stored as a ciphertext string
    grown = {**SIGNED_UP, "properties": {**SIGNED_UP["properties"], "referrer": {"type": "string"}}}
    narrowed = {**SIGNED_UP, "properties": {**SIGNED_UP["properties"], "plan": {"type": "string", "maxLength": 2}}}

    assert put_schema(registrar, "customer.signed_up", grown).status_code == 201
    refused = put_schema(registrar, "customer.signed_up", narrowed)
    assert refused.status_code == 409 and "stored event" in str(refused.json())  # the plain fields still count


def test_a_strict_deployment_still_records_registrations_and_erasures(api, registrar, settings):  # noqa: F811
    """Strict refuses a service's unregistered types, not the log's own records."""
    settings.AUDITSVC_STRICT_EVENT_TYPES = True
    EventType.objects.create(name="customer.signed_up", owner=registrar.source)  # staff add types here
    assert put_schema(registrar, "customer.signed_up", SIGNED_UP).status_code == 201
    assert sign_up(api).status_code == 201
    assert api.post_json(URL, {"type": "never.registered"}).status_code == 400

    call_command("erase_customer", "cus_1", "--yes", stdout=StringIO())

    own = set(Event.objects.filter(source__slug="auditsvc").values_list("type__name", flat=True))
    assert {"auditsvc.customer.erased"} <= own, own
    assert not EventType.objects.filter(name="never.registered").exists()


def test_a_version_may_not_remove_or_weaken_a_mark_and_forcing_one_protects_as_strongly(
    api,
    marked,
    registrar,  # noqa: F811
    staff_with,
):
    unmarked = {**SIGNED_UP, "properties": {**SIGNED_UP["properties"], "email": {"type": "string"}}}
    weakened = {**SIGNED_UP, "properties": {
        **SIGNED_UP["properties"], "national_id": {"type": "string", "x-auditsvc": "personal"}}}  # fmt: skip
    covered = {**SIGNED_UP, "properties": {**SIGNED_UP["properties"], "address": {"type": "object",
               "x-auditsvc": "sensitive"}}}  # a stronger mark on the enclosing property  # fmt: skip

    refused = [put_schema(registrar, "customer.signed_up", schema) for schema in (unmarked, weakened)]
    assert [r.status_code for r in refused] == [409, 409]
    assert "payload.email was marked personal" in str(refused[0].json())
    assert "payload.national_id was marked sensitive" in str(refused[1].json())
    assert put_schema(registrar, "customer.signed_up", covered).status_code == 201
    session = APIClient()
    session.force_login(staff_with("schema-admin", "change_eventtype"))
    path = "/api/v1/event-types/customer.signed_up/schema?force=true"
    assert session.put(path, {"schema": unmarked}, format="json").status_code == 201  # v3 drops the mark

    stored = sign_up(api).json()

    assert Event.objects.get(id=stored["id"]).schema_version == 3
    assert "ana@example.com" not in stored_texts()  # v1's mark still protects it
    assert str(Event.objects.get(id=stored["id"]).payload["address"]).startswith("hmac-sha256:")  # v2's


def test_an_older_version_named_by_dataschema_protects_what_a_later_version_marked(api, registrar):  # noqa: F811
    plain_email = {**SIGNED_UP, "properties": {**SIGNED_UP["properties"], "email": {"type": "string"}}}
    assert put_schema(registrar, "customer.signed_up", plain_email, validation="enforce").status_code == 201
    assert put_schema(registrar, "customer.signed_up", SIGNED_UP).status_code == 201  # v2 marks email
    cloud_event = {"specversion": "1.0", "id": "ce-1", "source": "/accounts", "type": "customer.signed_up",
                   "subject": "cus_1", "data": PLAIN,
                   "dataschema": "/api/v1/event-types/customer.signed_up/schemas/1"}  # fmt: skip

    response = api.client.post(URL, orjson.dumps(cloud_event), content_type="application/cloudevents+json")

    assert response.status_code == 201, response.json()
    assert Event.objects.get(id=response.json()["id"]).schema_version == 1
    assert "ana@example.com" not in stored_texts()
    assert api.client.get(f"{URL}/{response.json()['id']}").json()["payload"]["email"] == "ana@example.com"

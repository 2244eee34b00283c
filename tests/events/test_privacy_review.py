"""What a review of the privacy paths found, each as it was reproduced: marks that protected
nothing, containers of another shape, filters near a mark, an importer's stale marks, an admin
change racing an erasure, and schema keys in a strict deployment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from customers.admin import CustomerAdmin
from customers.models import Customer
from events import erasure, protection
from events.access_log import flush_access_log
from events.ids import uuid7, uuid7_time
from events.ingest.validation import parse_event
from events.ingest.write import hash_for
from events.models import Event, Source
from tests.events.test_privacy import PLAIN, SIGNED_UP, URL, stored_texts
from tests.events.test_privacy_binding import import_lines
from tests.events.test_schemas import put_schema, registrar, schema_key_of  # noqa: F401 - a fixture
from tests.paths import REPO_ROOT

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("production_write_path")]

EMAIL = {"type": "string", "x-auditsvc": "personal"}


@pytest.mark.parametrize(
    "schema",
    [
        {"$defs": {"e": EMAIL}, "properties": {"email": {"$ref": "#/$defs/e"}}},
        {"properties": {"email": {"allOf": [EMAIL]}}},
        {"properties": {"email": {"anyOf": [EMAIL, {"type": "null"}]}}},
        {"additionalProperties": EMAIL},
        {"patternProperties": {"^e": EMAIL}},
        {"properties": {"ips": {"type": "array", "prefixItems": [EMAIL]}}},
        {"properties": {"user": {"type": "object", "x-auditsvc": "personal",
                                 "properties": {"ssn": {"type": "string", "x-auditsvc": "sensitive"}}}}},
    ],
    ids=["$defs", "allOf", "anyOf", "additionalProperties", "patternProperties", "prefixItems", "mark-in-mark"],
)  # fmt: skip
def test_a_mark_where_it_would_protect_nothing_is_refused(registrar, schema):  # noqa: F811
    response = put_schema(registrar, "account.changed", {"type": "object", **schema}, validation="enforce")

    assert response.status_code == 400, response.json()
    assert {error["code"] for error in response.json()["errors"]} == {"invalid_marking"}
    assert not Event.objects.filter(type__name="account.changed").exists()


def test_a_property_named_like_the_mark_is_only_a_property(registrar):  # noqa: F811
    schema = {"type": "object", "properties": {"x-auditsvc": {"type": "string"}, "email": EMAIL}}
    assert put_schema(registrar, "account.changed", schema).status_code == 201


@pytest.mark.parametrize("validation", ["off", "warn"])
def test_a_marked_field_in_a_container_of_another_shape_is_protected_whole(api, validation):
    assert put_schema(schema_key_of(api), "customer.signed_up", SIGNED_UP, validation=validation).status_code == 201
    odd = {**PLAIN, "devices": {"ip": "203.0.113.99"}, "address": "Rua Secreta 7, Lisbon"}

    response = api.post_json(URL, {"type": "customer.signed_up", "customer": "cus_1", "payload": odd})

    assert response.status_code == 201, response.json()
    assert "203.0.113.99" not in stored_texts() and "Rua Secreta" not in stored_texts()
    read = api.client.get(f"{URL}/{response.json()['id']}").json()["payload"]
    assert read["devices"] == {"ip": "203.0.113.99"} and read["address"] == "Rua Secreta 7, Lisbon"


def test_filters_inside_above_or_on_the_logs_own_marks_are_recorded_as_hmacs(api, settings, make_client):
    settings.AUDITSVC_AUDIT_READS_IN_BACKGROUND = False
    marked = {**SIGNED_UP, "properties": {**SIGNED_UP["properties"],
              "address": {"type": "object", "x-auditsvc": "personal"}}}  # fmt: skip
    assert put_schema(schema_key_of(api), "customer.signed_up", marked).status_code == 201
    auditor = make_client("auditors", scopes=("read",))
    sought = {"payload.address.city": "Zedtown", "payload.devices.ip": "198.51.100.77",
              "payload.after.email": "zed@example.com"}  # fmt: skip

    for key, value in sought.items():
        assert auditor.client.get(URL, {key: value}).status_code == 200
    flush_access_log()

    records = json.dumps(list(Event.objects.filter(type__name="auditsvc.read").values_list("payload", flat=True)))
    assert all(key in records for key in sought)  # the reads were recorded
    assert not any(value in records for value in sought.values())


def forged_export(source: Source, body: dict[str, Any]) -> dict[str, Any]:
    """A record with one of our ids and the hash it gives: what anyone can compute."""
    event_id = uuid7()
    received_at = uuid7_time(event_id)
    assert received_at is not None
    digest = hash_for(source=source, item=parse_event(body), event_id=event_id, received_at=received_at)
    return {**body, "id": str(event_id), "hash": digest}


def test_an_importer_that_read_the_marks_before_another_process_registered_one_protects_by_it(api, tmp_path):
    api.post_json(URL, {"type": "signup.done", "customer": "cus_1", "payload": {"n": 1}})
    assert protection.marked_paths({"signup.done"}) == {"signup.done": frozenset()}  # this process knows none
    schema = {"type": "object", "properties": {"email": EMAIL}}
    code = ("from events.schema_registry import register_schema; "
            f"register_schema(type_name='signup.done', schema={schema!r}, actor='staff')")  # fmt: skip
    env = {**os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{connection.settings_dict['NAME']}"}
    subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=REPO_ROOT, env=env, check=True, timeout=120)
    record = forged_export(api.source, {"type": "signup.done", "customer": "cus_1",
                                        "payload": {"email": "ana@example.com"}})  # fmt: skip

    import_lines(tmp_path, [record])

    stored = json.dumps(list(Event.objects.filter(type__name="signup.done").values_list("payload", flat=True)))
    assert "ana@example.com" not in stored and "aes-gcm:v2:" in stored


def test_an_admin_change_of_a_customer_racing_its_erasure_both_complete(staff_with, monkeypatch):
    customer = Customer.objects.create(external_id="cus_1", email="ana@example.com", display_name="Ana")
    client = Client()
    client.force_login(staff_with("support", "change_customer", "view_customer"))
    saved = threading.Event()
    log_change = CustomerAdmin.log_change

    def slow_log_change(self: Any, request: Any, obj: Any, message: Any) -> Any:
        saved.set()  # the customer's row is written in the admin's transaction
        time.sleep(1.0)  # the window in which an erasure used to deadlock with it
        return log_change(self, request, obj, message)

    monkeypatch.setattr(CustomerAdmin, "log_change", slow_log_change)
    outcome: dict[str, Any] = {}

    def edit() -> None:
        form = {"external_id": "cus_1", "email": "ana2@example.com", "display_name": "Ana B",
                "identities-TOTAL_FORMS": "0", "identities-INITIAL_FORMS": "0",
                "identities-MIN_NUM_FORMS": "0", "identities-MAX_NUM_FORMS": "1000"}  # fmt: skip
        try:
            outcome["admin"] = client.post(f"/admin/customers/customer/{customer.pk}/change/", form).status_code
        finally:
            connection.close()

    def erase() -> None:
        saved.wait(10)
        try:
            outcome["erase"] = erasure.erase_customer("cus_1", actor="dpo").customer
        except Exception as exc:
            outcome["erase"] = repr(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=edit), threading.Thread(target=erase)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert outcome == {"admin": 302, "erase": "cus_1"}


def test_in_a_strict_deployment_a_schema_key_registers_no_new_type(api, registrar, settings):  # noqa: F811
    settings.AUDITSVC_STRICT_EVENT_TYPES = True
    schema = {"type": "object", "properties": {"email": EMAIL}}

    refused = put_schema(registrar, "brand.new", schema)

    assert refused.status_code == 400
    assert [(e["field"], e["code"]) for e in refused.json()["errors"]] == [("name", "unknown_event_type")]
    assert api.post_json(URL, {"type": "brand.new", "payload": {}}).status_code == 400


def test_a_forged_export_is_still_held_to_its_types_schema(api, tmp_path):
    assert put_schema(schema_key_of(api), "customer.signed_up", SIGNED_UP, validation="enforce").status_code == 201
    genuine = api.post_json(URL, {"type": "customer.signed_up", "customer": "cus_1", "payload": PLAIN}).json()
    protected = Event.objects.get(id=genuine["id"]).payload  # marked fields as stored: it passes as an export
    record = forged_export(api.source, {"type": "customer.signed_up", "customer": "cus_1",
                                        "payload": {**protected, "plan": 12345}})  # fmt: skip

    _, rejects = import_lines(tmp_path, [record])

    assert [(e["field"], e["code"]) for reject in rejects for e in reject["errors"]] == [
        ("payload.plan", "schema_violation")
    ]
    assert not Event.objects.filter(id=record["id"]).exists()

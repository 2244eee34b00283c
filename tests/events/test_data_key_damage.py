"""A customer's data key altered or removed behind the log's back (issue 25, review F7): its values
read as unreadable (never a 500), its customer's writes are refused with a 503 (never stored plain),
and verify_events names the key."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from events.integrity.verification import verify_integrity
from events.models import CustomerDataKey, Event
from tests.events.test_schemas import put_schema, registrar  # noqa: F401 - a fixture
from tests.security.test_database_roles import refusal, service_role  # noqa: F401 - a fixture

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("production_write_path")]

URL = "/api/v1/events"
SIGNED_UP: dict[str, Any] = {"type": "object", "properties": {"email": {"type": "string", "x-auditsvc": "personal"}}}


def signed_up(api: Any, customer: str) -> Any:
    body = {"type": "customer.signed_up", "customer": customer, "payload": {"email": f"{customer}@example.com"}}
    return api.post_json(URL, body)


def key_of(customer: str) -> int:
    (key_id,) = CustomerDataKey.objects.filter(customer=customer).values_list("id", flat=True)
    return int(key_id)


def test_an_overwritten_data_key_reads_as_unreadable_refuses_writes_and_is_a_finding(service_role, api, registrar):  # noqa: F811
    assert put_schema(registrar, "customer.signed_up", SIGNED_UP).status_code == 201
    stored = signed_up(api, "cus_1").json()["id"]
    assert signed_up(api, "cus_2").status_code == 201
    tampering = "UPDATE events_customerdatakey SET wrapped = decode(repeat('00', 60), 'hex') WHERE customer = 'cus_1'"
    assert refusal(service_role, tampering) == ""

    listed = api.client.get(URL, {"customer": "cus_1"})
    one = api.client.get(f"{URL}/{stored}")
    refused = signed_up(api, "cus_1")

    assert listed.status_code == 200 and [e["payload"]["email"] for e in listed.json()["results"]] == ["[unreadable]"]
    assert one.status_code == 200 and one.json()["payload"]["email"] == "[unreadable]"
    assert refused.status_code == 503, refused.content
    assert [(e["field"], e["code"]) for e in refused.json()["errors"]] == [("customer", "data_key_unreadable")]
    assert Event.objects.filter(customer__external_id="cus_1").count() == 1  # nothing stored
    assert signed_up(api, "cus_2").status_code == 201  # another customer's key still serves
    findings = [(f.kind, f.detail) for f in verify_integrity().findings]
    assert [kind for kind, _ in findings] == ["data_key_unreadable"]
    assert f"data key {key_of('cus_1')} of customer cus_1" in findings[0][1]


def test_a_deleted_data_key_is_a_finding(api, registrar):  # noqa: F811
    assert put_schema(registrar, "customer.signed_up", SIGNED_UP).status_code == 201
    stored = signed_up(api, "cus_1").json()["id"]
    assert signed_up(api, "cus_2").status_code == 201
    gone = key_of("cus_1")
    with connection.cursor() as cursor:  # only the owner can now (the test above)
        cursor.execute("DELETE FROM events_customerdatakey WHERE customer = 'cus_1'")

    findings = verify_integrity().findings

    assert [(f.kind, f.event_id) for f in findings] == [("data_key_missing", stored)]
    assert f"data key {gone}, under which 1 stored event(s)" in findings[0].detail
    assert api.client.get(f"{URL}/{stored}").json()["payload"]["email"] == "[unreadable]"

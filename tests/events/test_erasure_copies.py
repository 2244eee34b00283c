"""Erasure reaches every copy (issue 25, item 4): after erase_customer, a dump of the whole
database holds none of the customer's values; and an erasure is recorded and verifiable."""

from __future__ import annotations

import hashlib
import json
import subprocess
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse

from customers.models import Customer
from events.access_log import flush_access_log
from events.ingest.import_identity import DerivedKeys
from events.ingest.validation import fingerprint_of, parse_event
from events.ingest.write import ingest_events
from events.integrity.verification import verify_integrity
from events.models import CustomerDataKey, Event, IdempotencyKey
from tests.events.ingest.test_import_export import run_import, write_lines
from tests.events.test_schemas import put_schema, registrar  # noqa: F401 - a fixture

# Ingest commits for real (group commit, the importer's workers), as in production.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("production_write_path")]

CUSTOMER = "cus_erasable"
EMAIL = "Zoe.Quill@Erasure.Example"  # mixed case: the lower-case form is sought too
NAME = "Zoë Quillfeather"  # not ASCII: its JSON-escaped form differs
PHONE = "+351 912 345 678"
PIN = "4711"
SIGNED_UP: dict[str, Any] = {
    "type": "object",
    "properties": {
        "email": {"type": "string", "x-auditsvc": "personal"},
        "phone": {"type": "string", "x-auditsvc": "personal"},
        "pin": {"type": "string", "x-auditsvc": "sensitive"},
    },
}


def dump() -> str:
    """The whole test database as pg_dump writes it (schema and data)."""
    db = connection.settings_dict
    command = ["pg_dump", "-h", db["HOST"] or "127.0.0.1", "-p", str(db["PORT"] or 5432), "-U", db["USER"], db["NAME"]]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout


def forms(value: str) -> set[str]:
    """The ways a value could be written in a dump: as is, in lower case, JSON-escaped, and each
    of those as COPY escapes backslashes."""
    written = {value, value.lower(), json.dumps(value)[1:-1], json.dumps(value.lower())[1:-1]}
    return written | {text.replace("\\", "\\\\") for text in written}


@pytest.fixture
def staff(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("dpo-staff"))
    return client


def edit_in_the_admin(staff: Client, **fields: str) -> None:
    customer = Customer.objects.get(external_id=CUSTOMER)
    form = {
        "identities-TOTAL_FORMS": "0", "identities-INITIAL_FORMS": "0",
        "identities-MIN_NUM_FORMS": "0", "identities-MAX_NUM_FORMS": "1000", **fields,
    }  # fmt: skip
    url = reverse("admin:customers_customer_change", args=[customer.pk])
    assert staff.get(url).status_code == 200  # the state before is taken when the page loads
    response = staff.post(url, form)
    assert response.status_code == 302, response.context["errors"] if response.context else response


def test_after_an_erasure_a_dump_of_the_database_holds_none_of_the_customers_values(api, registrar, staff, tmp_path):  # noqa: F811
    assert put_schema(registrar, "customer.signed_up", SIGNED_UP, validation="enforce").status_code == 201
    sent = {"type": "customer.signed_up", "customer": CUSTOMER, "payload": {"email": EMAIL, "phone": PHONE, "pin": PIN}}
    assert api.post_json("/api/v1/events", {**sent, "idempotency_key": "signup-1"}).status_code == 201
    # Staff set the contact fields, then change them: the records hold them before and after.
    edit_in_the_admin(staff, email=EMAIL, display_name=NAME)
    edit_in_the_admin(staff, email=EMAIL.lower(), display_name=f"{NAME} Jr")
    # Searches by the e-mail: the API's customer filters, a payload filter, the admin's search box.
    assert api.client.get("/api/v1/customers", {"email": EMAIL}).json()["results"][0]["external_id"] == CUSTOMER
    assert api.client.get("/api/v1/customers", {"search": EMAIL.lower()}).status_code == 200
    assert api.client.get("/api/v1/events", {"payload.email": EMAIL}).status_code == 200
    assert staff.get(reverse("admin:customers_customer_changelist"), {"q": EMAIL}).status_code == 200
    flush_access_log()
    # An imported record with neither a key nor an id: its key is derived from it.
    line = json.dumps({"type": "customer.signed_up", "customer": CUSTOMER, "payload": {"phone": PHONE, "pin": PIN}})
    status, _ = run_import(str(write_lines(tmp_path / "signups.ndjson", [line])), "--source", api.source.slug)
    assert status == 0
    assert Event.objects.filter(idempotency_key__startswith="import:").count() == 1
    before = dump()
    assert NAME in before  # the customer row holds them until the erasure (the test can see them)

    call_command("erase_customer", CUSTOMER, "--yes", stdout=StringIO())

    after = dump()
    for value in (EMAIL, NAME, f"{NAME} Jr", PHONE):
        found = [text for text in forms(value) if text in after]
        assert not found, f"{value!r} is still in the database as {found}"
    # No unkeyed digest of what was sent: a PIN's SHA-256 is reversed by trying 10,000 of them.
    digests = {
        hashlib.sha256(line.encode()).hexdigest()[:40],  # the import's derived key, as it was
        fingerprint_of(json.loads(line)),  # the fingerprint of what was imported, as it was
        fingerprint_of(sent),  # and of what the API was sent
    }
    assert not [digest for digest in digests if digest in after]
    assert verify_integrity().ok  # the seals cover what is stored: still whole


def personal_event(api: Any, customer: str) -> None:
    body = {"type": "customer.signed_up", "customer": customer, "payload": {"email": EMAIL}}
    assert api.post_json("/api/v1/events", body).status_code == 201


def verify() -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("verify_events", stdout=out)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


def test_a_data_key_erased_behind_the_logs_back_is_a_finding_and_an_erasure_is_not(api, registrar):  # noqa: F811
    assert put_schema(registrar, "customer.signed_up", SIGNED_UP).status_code == 201
    personal_event(api, "cus_quiet")
    personal_event(api, "cus_asked")
    (quiet,) = CustomerDataKey.objects.filter(customer="cus_quiet").values_list("id", flat=True)
    with connection.cursor() as cursor:  # what the service's database role can do, unrecorded
        cursor.execute(
            "UPDATE events_customerdatakey SET wrapped = NULL, erased_at = now() WHERE customer = 'cus_quiet'"
        )
    call_command("erase_customer", "cus_asked", "--yes", stdout=StringIO())

    status, out = verify()

    assert status == 1
    findings = [(f.kind, f.detail) for f in verify_integrity().findings]
    assert [kind for kind, _ in findings] == ["data_key_erased_unrecorded"]
    assert f"data key {quiet} of customer cus_quiet" in findings[0][1]
    assert "data_key_erased_unrecorded" in out and "cus_asked" not in out
    (erased,) = Event.objects.filter(type__name="auditsvc.customer.erased")
    asked = list(CustomerDataKey.objects.filter(customer="cus_asked").values_list("id", flat=True))
    assert erased.payload["data_key_ids"] == asked  # the record names the keys it destroyed


def held_fingerprint(key: str) -> str:
    return str(IdempotencyKey.objects.get(key=key).fingerprint)


def test_a_fingerprint_of_personal_fields_is_bound_to_the_customers_key(api, registrar):  # noqa: F811
    assert put_schema(registrar, "customer.signed_up", SIGNED_UP).status_code == 201
    sent = {"type": "customer.signed_up", "customer": CUSTOMER, "payload": {"email": EMAIL, "pin": PIN}}
    assert api.post_json("/api/v1/events", {**sent, "idempotency_key": "first"}).status_code == 201
    # The same every time it is sent (a retry is a repeat, not a 409), though the ciphertexts differ.
    assert api.post_json("/api/v1/events", {**sent, "idempotency_key": "first"}).status_code == 200
    call_command("erase_customer", CUSTOMER, "--yes", stdout=StringIO())

    assert api.post_json("/api/v1/events", {**sent, "idempotency_key": "again"}).status_code == 201

    # Under the new key, another fingerprint: the erased one can no longer be recomputed, so no
    # one, holding the master key or not, can test a guessed value against it.
    assert held_fingerprint("again") != held_fingerprint("first")


def test_claims_made_before_fingerprints_and_import_keys_were_keyed_are_still_recognised(api, registrar, tmp_path):  # noqa: F811
    assert put_schema(registrar, "customer.signed_up", SIGNED_UP).status_code == 201
    # Personal: the stored ciphertext differs from a retry's, so only the fingerprint can tell.
    sent = {"type": "customer.signed_up", "customer": CUSTOMER, "payload": {"email": EMAIL}, "idempotency_key": "old"}
    assert api.post_json("/api/v1/events", sent).status_code == 201
    IdempotencyKey.objects.filter(key="old").update(fingerprint=fingerprint_of(sent))  # as stored before
    line = json.dumps({"type": "user.login", "actor": "grace"})
    old_key = DerivedKeys().next_key((1, line.encode())).legacy_key  # SHA-256 of the record's bytes
    ingest_events(
        source=api.source, items=[parse_event(json.loads(line), idempotency_header=old_key)], permanent_keys=True
    )  # fmt: skip - what an earlier import_events stored

    assert api.post_json("/api/v1/events", sent).status_code == 200  # a retry, not a 409
    status, out = run_import(str(write_lines(tmp_path / "again.ndjson", [line])), "--source", api.source.slug)

    assert (status, out.endswith("read 1, stored 0, duplicates skipped 1, rejected 0\n")) == (0, True), out
    assert Event.objects.filter(actor="grace").count() == 1

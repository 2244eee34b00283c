"""POST /api/v1/events through the HTTP stack, checked against the stored rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import override_settings
from rest_framework.test import APIClient

from customers.models import Customer, CustomerIdentity
from events.integrity.hashing import event_hash
from events.keys import revoke_api_key
from events.models import ApiKey, Event, EventType

# Production's write path: every single event through the group committer (issue 24, item 8).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("production_write_path")]

URL = "/api/v1/events"


def only_event() -> Event:
    return Event.objects.select_related("type", "source", "customer").get()


def test_it_stores_a_single_event(api):
    response = api.post_json(
        URL,
        {
            "type": "customer.created",
            "customer": "cus_42",
            "actor": "alice@example.com",
            "occurred_at": "2026-11-20T09:30:00.250+01:00",
            "description": "Customer signed up",
            "payload": {"plan": "pro", "address": {"country": "DE"}},
        },
    )

    assert response.status_code == 201, response.content
    body = response.json()
    event = only_event()
    assert body["id"] == str(event.id)
    assert event.id.version == 7
    assert event.type.name == "customer.created"
    assert event.source.slug == "billing"
    assert event.customer is not None and event.customer.external_id == "cus_42"
    assert event.actor == "alice@example.com"
    assert event.occurred_at == datetime(2026, 11, 20, 8, 30, 0, 250000, tzinfo=UTC)
    assert event.payload == {"plan": "pro", "address": {"country": "DE"}}
    assert body["occurred_at"] == "2026-11-20T08:30:00.250000Z"
    assert body["source"] == "billing"
    assert body["hash"] == event.hash


def test_it_defaults_occurred_at_to_receipt_and_payload_to_empty(api):
    response = api.post_json(URL, {"type": "heartbeat"})

    assert response.status_code == 201
    event = only_event()
    assert event.occurred_at == event.received_at
    assert event.payload == {}
    assert event.customer is None


def test_it_stores_a_batch_in_order(api):
    events = [{"type": f"billing.step{i % 3}", "customer": f"cus_{i % 4}", "payload": {"n": i}} for i in range(25)]

    response = api.post_json(URL, {"events": events})

    assert response.status_code == 201
    body = response.json()
    assert body["created"] == 25 and body["duplicates"] == 0
    ids = [item["id"] for item in body["events"]]
    assert ids == sorted(ids)  # UUIDv7: time-ordered in submission order
    stored = {str(e.id): e for e in Event.objects.all()}
    assert set(stored) == set(ids)
    assert [stored[i].payload["n"] for i in ids] == list(range(25))
    assert Customer.objects.count() == 4
    assert EventType.objects.count() == 3


def test_it_attaches_customer_identities(api):
    response = api.post_json(
        URL,
        {
            "type": "customer.linked",
            "customer": "cus_42",
            "customer_identities": [{"system": "stripe", "id": "cus_S1"}, {"system": "crm", "id": "C-9"}],
        },
    )

    assert response.status_code == 201
    identities = set(CustomerIdentity.objects.values_list("customer__external_id", "system", "external_id"))
    assert identities == {("cus_42", "stripe", "cus_S1"), ("cus_42", "crm", "C-9")}


def test_it_rejects_an_identity_owned_by_another_customer(api):
    api.post_json(URL, {"type": "a.b", "customer": "cus_1", "customer_identities": [{"system": "s", "id": "1"}]})

    response = api.post_json(
        URL, {"type": "a.b", "customer": "cus_2", "customer_identities": [{"system": "s", "id": "1"}]}
    )

    assert response.status_code == 409
    assert response.json()["errors"][0]["code"] == "identity_conflict"
    assert Event.objects.count() == 1
    assert not Customer.objects.filter(external_id="cus_2").exists()


def test_the_hash_matches_a_recomputation_from_the_stored_row(api):
    api.post_json(
        URL,
        {"type": "billing.charged", "customer": "cus_7", "payload": {"amount": 19.99, "currency": "EUR", "n": [1, 2]}},
    )
    event = only_event()

    assert event.hash == event_hash(
        event_id=event.id,
        type_name=event.type.name,
        source_slug=event.source.slug,
        customer=event.customer.external_id if event.customer else None,
        actor=event.actor,
        occurred_at=event.occurred_at,
        received_at=event.received_at,
        description=event.description,
        payload=event.payload,
    )


# --- source comes from the key ----------------------------------------------------------


def test_the_source_is_the_keys_whatever_the_body_says(make_client):
    billing = make_client("billing")
    make_client("shipping")

    refused = billing.post_json(URL, {"type": "a.b", "source": "shipping"})
    stored = billing.post_json(URL, {"type": "a.b"})

    assert refused.status_code == 400
    assert refused.json()["errors"] == [
        {"field": "source", "code": "unknown_field", "message": "Unknown field 'source'."}
    ]
    assert stored.status_code == 201
    assert list(Event.objects.values_list("source__slug", flat=True)) == ["billing"]


# --- authentication and scopes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "not_authenticated"),
        ("Bearer audit_abcdefghij_wrongsecret", "authentication_failed"),
        ("Bearer not-a-key", "authentication_failed"),
        ("Bearer two parts", "authentication_failed"),
    ],
)
def test_it_rejects_missing_or_invalid_keys(db, authorization, code):
    client = APIClient()
    headers = {"Authorization": authorization} if authorization else {}

    response = client.post(URL, {"type": "a.b"}, format="json", headers=headers)

    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == code
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert Event.objects.count() == 0


def test_it_rejects_a_revoked_key(api):
    revoke_api_key(prefix=api.key.split("_")[1])

    response = api.post_json(URL, {"type": "a.b"})

    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "key_revoked"
    assert Event.objects.count() == 0


def test_a_read_only_key_cannot_ingest(make_client):
    reader = make_client("reporting", scopes=("read",))

    response = reader.post_json(URL, {"type": "a.b"})

    assert response.status_code == 403
    assert response.json()["errors"][0]["code"] == "permission_denied"
    assert Event.objects.count() == 0


def test_an_inactive_source_cannot_ingest(api):
    api.source.is_active = False
    api.source.save()

    response = api.post_json(URL, {"type": "a.b"})

    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "source_inactive"


def test_it_records_key_use_at_most_once_a_minute(api):
    with time_machine.travel(datetime(2026, 11, 24, 10, 0, tzinfo=UTC), tick=False):
        api.post_json(URL, {"type": "a.b"})
    first = ApiKey.objects.get().last_used_at
    with time_machine.travel(datetime(2026, 11, 24, 10, 0, 30, tzinfo=UTC), tick=False):
        api.post_json(URL, {"type": "a.b"})
    assert ApiKey.objects.get().last_used_at == first
    with time_machine.travel(datetime(2026, 11, 24, 10, 1, 30, tzinfo=UTC), tick=False):
        api.post_json(URL, {"type": "a.b"})
    assert ApiKey.objects.get().last_used_at == datetime(2026, 11, 24, 10, 1, 30, tzinfo=UTC)


# --- strict deployments -------------------------------------------------------------------


@override_settings(AUDITSVC_STRICT_EVENT_TYPES=True)
def test_a_strict_deployment_refuses_unregistered_types(api):
    EventType.objects.create(name="known.type")

    response = api.post_json(URL, {"events": [{"type": "known.type"}, {"type": "unknown.type"}]})

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {
            "field": "events[1].type",
            "code": "unknown_event_type",
            "message": "Event type 'unknown.type' is not registered and this deployment is strict.",
        }
    ]
    assert Event.objects.count() == 0
    assert not EventType.objects.filter(name="unknown.type").exists()


# --- size limits ------------------------------------------------------------------------------


@override_settings(AUDITSVC_MAX_BODY_BYTES=2048)
def test_it_answers_413_for_a_body_over_the_cap(api):
    response = api.post_json(URL, {"type": "a.b", "payload": {"blob": "x" * 5000}})

    assert response.status_code == 413
    assert response.json()["errors"][0]["code"] == "body_too_large"
    assert Event.objects.count() == 0


def test_it_answers_415_for_a_body_that_is_not_json(api):
    response = api.client.post(URL, "type=a.b", content_type="application/x-www-form-urlencoded")

    assert response.status_code == 415
    assert response.json()["errors"][0]["code"] == "unsupported_media_type"


def test_it_rejects_a_batch_over_the_limit(api):
    response = api.post_json(URL, {"events": [{"type": "a.b"}] * 1001})

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "too_many_events"
    assert Event.objects.count() == 0


def test_a_batch_with_one_bad_event_stores_nothing(api):
    events = [{"type": "a.b"}] * 5 + [{"type": "a.b", "occurred_at": "yesterday"}] + [{"type": "a.b"}] * 5

    response = api.post_json(URL, {"events": events})

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {
            "field": "events[5].occurred_at",
            "code": "invalid_datetime",
            "message": "Must be an RFC 3339 time with an offset, e.g. 2026-11-24T09:30:00Z.",
        }
    ]
    assert Event.objects.count() == 0


# --- every error case: status, field, code, and nothing stored ------------------------------

DEEP: dict[str, object] = {}
_node = DEEP
for _ in range(40):
    _node["d"] = {}
    _node = _node["d"]  # type: ignore[assignment]

FUTURE = (datetime.now(UTC) + timedelta(hours=1)).isoformat()

BAD_BODIES = [
    # (raw body, field, code)
    (b'{"type": "a.b",', None, "malformed_json"),
    (b"", None, "malformed_json"),
    (b'{"type": "a.b", "payload": {"x": NaN}}', None, "malformed_json"),
    (b'{"type": "a.b", "payload": {"x": 1e400}}', None, "malformed_json"),
    (b'{"type": "a.b", "payload": {"x": Infinity}}', None, "malformed_json"),
    (b'{"type": "\\ud800"}', None, "malformed_json"),
    (b'{"type": "a.b", "payload": {"x": "\xff"}}', None, "malformed_json"),
    (b"[]", None, "invalid_body"),
    (b'"a string"', None, "invalid_body"),
    (json.dumps({}).encode(), "type", "required"),
    (json.dumps({"type": 42}).encode(), "type", "wrong_type"),
    (json.dumps({"type": ""}).encode(), "type", "blank"),
    (json.dumps({"type": "has space"}).encode(), "type", "invalid_event_type"),
    (json.dumps({"type": ".leading.dot"}).encode(), "type", "invalid_event_type"),
    (json.dumps({"type": "a" * 201}).encode(), "type", "too_long"),
    (json.dumps({"type": "a.b\u0000"}).encode(), "type", "null_character"),
    (json.dumps({"type": "a.b", "colour": "red"}).encode(), "colour", "unknown_field"),
    (json.dumps({"type": "a.b", "id": "0190e5f1-0000-7000-8000-000000000000"}).encode(), "id", "unknown_field"),
    (json.dumps({"type": "a.b", "hash": "00"}).encode(), "hash", "unknown_field"),
    (json.dumps({"type": "a.b", "payload": [1, 2]}).encode(), "payload", "wrong_type"),
    (json.dumps({"type": "a.b", "payload": "text"}).encode(), "payload", "wrong_type"),
    (json.dumps({"type": "a.b", "payload": {"x": "a\u0000b"}}).encode(), "payload", "null_character"),
    (json.dumps({"type": "a.b", "payload": {"k\u0000": 1}}).encode(), "payload", "null_character"),
    (json.dumps({"type": "a.b", "payload": {"l": [["\u0000"]]}}).encode(), "payload", "null_character"),
    (json.dumps({"type": "a.b", "payload": DEEP}).encode(), "payload", "nesting_too_deep"),
    (json.dumps({"type": "a.b", "payload": {"n": 2**60}}).encode(), "payload", "number_out_of_range"),
    (json.dumps({"type": "a.b", "customer": 42}).encode(), "customer", "wrong_type"),
    (json.dumps({"type": "a.b", "customer": "   "}).encode(), "customer", "blank"),
    (json.dumps({"type": "a.b", "customer": "c" * 201}).encode(), "customer", "too_long"),
    (json.dumps({"type": "a.b", "actor": ["x"]}).encode(), "actor", "wrong_type"),
    (json.dumps({"type": "a.b", "actor": "a" * 201}).encode(), "actor", "too_long"),
    (json.dumps({"type": "a.b", "description": "d" * 2001}).encode(), "description", "too_long"),
    (json.dumps({"type": "a.b", "description": "x\u0000"}).encode(), "description", "null_character"),
    (json.dumps({"type": "a.b", "occurred_at": "yesterday"}).encode(), "occurred_at", "invalid_datetime"),
    (json.dumps({"type": "a.b", "occurred_at": "2026-11-20"}).encode(), "occurred_at", "invalid_datetime"),
    (json.dumps({"type": "a.b", "occurred_at": "2026-11-20T10:00:00"}).encode(), "occurred_at", "invalid_datetime"),
    (json.dumps({"type": "a.b", "occurred_at": "2026-02-30T10:00:00Z"}).encode(), "occurred_at", "invalid_datetime"),
    (json.dumps({"type": "a.b", "occurred_at": 1732440000}).encode(), "occurred_at", "invalid_datetime"),
    (json.dumps({"type": "a.b", "occurred_at": FUTURE}).encode(), "occurred_at", "in_future"),
    (json.dumps({"type": "a.b", "occurred_at": "1969-12-31T23:59:59Z"}).encode(), "occurred_at", "out_of_range"),
    (json.dumps({"type": "a.b", "idempotency_key": 7}).encode(), "idempotency_key", "wrong_type"),
    (json.dumps({"type": "a.b", "idempotency_key": "k" * 201}).encode(), "idempotency_key", "too_long"),
    (json.dumps({"type": "a.b", "customer_identities": [{"system": "s", "id": "1"}]}).encode(), "customer", "required"),
    (
        json.dumps({"type": "a.b", "customer": "c", "customer_identities": {"system": "s"}}).encode(),
        "customer_identities",
        "wrong_type",
    ),
    (
        json.dumps({"type": "a.b", "customer": "c", "customer_identities": [{"system": "s"}]}).encode(),
        "customer_identities[0].id",
        "required",
    ),
    (
        json.dumps(
            {"type": "a.b", "customer": "c", "customer_identities": [{"system": "s", "id": "1", "x": 1}]}
        ).encode(),
        "customer_identities[0].x",
        "unknown_field",
    ),
    (json.dumps({"events": {"type": "a.b"}}).encode(), "events", "wrong_type"),
    (json.dumps({"events": []}).encode(), "events", "empty_batch"),
    (json.dumps({"events": [{"type": "a.b"}], "extra": 1}).encode(), "extra", "unknown_field"),
    (json.dumps({"events": [{"type": "a.b"}, "nope"]}).encode(), "events[1]", "wrong_type"),
    (json.dumps({"events": [{"type": "a.b"}, {"type": 1}]}).encode(), "events[1].type", "wrong_type"),
]


@pytest.mark.parametrize(("body", "field", "code"), BAD_BODIES)
def test_it_rejects_bad_input_field_by_field(api, body, field, code):
    response = api.client.generic("POST", URL, body, content_type="application/json")

    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert {"field": field, "code": code} in [{"field": e["field"], "code": e["code"]} for e in errors], errors
    assert all(isinstance(e["message"], str) and e["message"] for e in errors)
    assert Event.objects.count() == 0


@pytest.mark.parametrize("count", [3, 25])  # the one-INSERT path and the COPY path
def test_awkward_strings_are_stored_exactly(api, count):
    tricky = "tab\there\nnewline\r\\backslash \\N not null \u2028 é 😀 \\u0000-as-text"
    events = [
        {"type": "a.b", "actor": tricky[:200], "description": tricky, "customer": f"c\\{n}",
         "payload": {"s": tricky, "k\\ey": [tricky, 1.5, 100.0, -0.0, 1e-7], "n": n}}
        for n in range(count)
    ]  # fmt: skip

    response = api.post_json(URL, {"events": events})

    assert response.status_code == 201, response.content
    stored = {e.payload["n"]: e for e in Event.objects.select_related("customer", "type", "source")}
    for n, sent in enumerate(events):
        event = stored[n]
        assert event.customer is not None
        assert (event.actor, event.description, event.customer.external_id) == (sent["actor"], tricky, f"c\\{n}")
        assert event.payload == sent["payload"]
        assert event.hash == event_hash(
            event_id=event.id, type_name="a.b", source_slug="billing", customer=f"c\\{n}", actor=event.actor,
            occurred_at=event.occurred_at, received_at=event.received_at, description=tricky, payload=event.payload,
        )  # fmt: skip


def test_a_service_cannot_claim_a_key_the_importer_derives(api):
    """An API key "import-id:42" would make a later import of another store's record 42 a duplicate."""
    single = api.post_json(URL, {"type": "a.b", "idempotency_key": "import-id:42"})
    batch = api.post_json(URL, {"events": [{"type": "a.b", "idempotency_key": "order-1"},
                                           {"type": "a.b", "idempotency_key": "import:0f3a"}]})  # fmt: skip
    header = api.client.post(URL, {"type": "a.b"}, format="json", HTTP_IDEMPOTENCY_KEY="import:0f3a")

    assert single.status_code == 400 and single.json()["errors"][0]["code"] == "reserved_idempotency_key"
    assert batch.status_code == 400
    assert [(e["field"], e["code"]) for e in batch.json()["errors"]] == [
        ("events[1].idempotency_key", "reserved_idempotency_key")
    ]
    assert header.status_code == 400 and header.json()["errors"][0]["code"] == "reserved_idempotency_key"
    assert Event.objects.count() == 0
    assert api.post_json(URL, {"type": "a.b", "idempotency_key": "my-import:1"}).status_code == 201

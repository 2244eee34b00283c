"""The read path renders events from the database's text of them (issue 26, part 4): every read
answers, byte for byte, what the model-instance path before it answered. The oracle below is
that path (model rows → StoredEvent → the dict literal → readable_outputs → the renderer)."""

from __future__ import annotations

from io import StringIO
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from django.core.management import call_command
from django.db import connection
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from auditsvc.api.pagination import paginate
from auditsvc.api.renderers import ORJSONRenderer
from events import protection
from events.api.views import EVENT_ORDERINGS
from events.integrity import proofs
from events.integrity.canonical import big_ints_as_floats
from events.integrity.hashing import format_time
from events.integrity.sealing import seal_events
from events.models import Event
from events.queries import StoredEvent, events_queryset, stored_event_from_row
from tests.database import triggers_off
from tests.events.ingest.test_cloudevents import STRUCTURED
from tests.events.test_privacy import PLAIN, SIGNED_UP, URL, sign_up
from tests.events.test_privacy_binding import stored_as_before
from tests.events.test_schemas import put_schema, registrar  # noqa: F401 - a fixture

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("production_write_path")]

NUMBERS = {
    "below_2_53": 9007199254740991, "past_2_53": 1e16, "near_2_63": 9.2e18, "small": 1e-7, "negative_zero": -0.0,
    "tenth": 0.1, "one": 1.0, "negative": -1e18, "long": 123456789.12345679, "tiny": 5e-324,
}  # fmt: skip
# Beyond ±2^63: refused on the way in now, but stored before that rule; jsonb holds their digits.
BEYOND_64_BITS = {"beyond": 1e20, "huge": 1.5e300, "negative": -1e19, "u64": 18446744073709551616.0, **NUMBERS}
NESTED = {
    "a": {"b": {"c": [1, {"d": [None, True, False, "x"]}, []], "e": {}}},
    "text": 'quotes " and \\ backslashes, \u00e9t\u00e9, \U0001f600, tab\t, newline\n',
    "digits": "12345678901234567890123",  # a long run of digits in a string: the exact (slower) decoder
    "aes": "aes-gcm is named here, not a ciphertext", "empty": "", "null": None,
}  # fmt: skip


def old_event_output(event: StoredEvent) -> dict[str, Any]:
    """event_output as it was before: the oracle."""
    return {
        "id": str(event.id), "type": event.type, "source": event.source, "customer": event.customer,
        "actor": event.actor, "occurred_at": format_time(event.occurred_at),
        "received_at": format_time(event.received_at), "description": event.description, "payload": event.payload,
        "idempotency_key": event.idempotency_key, "hash": event.hash, "origin": event.origin,
    }  # fmt: skip


def old_outputs(events: list[Event]) -> list[dict[str, Any]]:
    """The old path's outputs. It searched each payload for ciphertexts in orjson's text of it, which
    raised (a 500) for a number jsonb holds beyond 64 bits: such a payload is searched here as the
    renderer writes it (big_ints_as_floats), which is what the answer then held."""
    outputs = [old_event_output(stored_event_from_row(event)) for event in events]
    texts = [orjson.dumps(big_ints_as_floats(output["payload"])) for output in outputs]
    return protection.readable_outputs(outputs, payload_texts=[text.decode() for text in texts])


def render(data: Any) -> bytes:
    return ORJSONRenderer().render(data)


def old_page(url: str, customer: str | None = None) -> bytes:
    """What the list (or a customer's timeline) answered at url before: model rows, links read off them."""
    parts = urlsplit(url)
    request = Request(APIRequestFactory().get(parts.path + "?" + parts.query))
    ordering = EVENT_ORDERINGS[request.query_params.get("ordering", "-occurred_at")]
    events = events_queryset() if customer is None else events_queryset().filter(customer__external_id=customer)
    return render(paginate(request, events, ordering=ordering, render=old_outputs))


@pytest.fixture
def varied(api, make_client, registrar) -> list[str]:  # noqa: F811
    """Events of every shape a read meets; their ids."""
    assert put_schema(registrar, "customer.signed_up", SIGNED_UP, validation="enforce").status_code == 201
    for customer in ("cus_1", "cus_erased", "cus_2"):
        assert sign_up(api, customer).status_code == 201
    assert sign_up(api, "cus_1", devices=[], address={}).status_code == 201
    stolen = sign_up(api, "cus_2").json()["payload"]["email"]
    stored_as_before(api.source, {"type": "customer.signed_up", "customer": "cus_1",
                                  "payload": {**PLAIN, "email": stolen}})  # fmt: skip  # reads [unreadable]
    bodies: list[dict[str, Any]] = [
        {"type": "billing.charged", "customer": "cus_1", "actor": "alice", "description": "Big numbers",
         "occurred_at": "2026-09-01T00:00:00Z", "payload": NUMBERS, "idempotency_key": "k-1"},
        {"type": "note.taken", "payload": NESTED, "occurred_at": "2026-09-01T12:30:00.000001+02:00"},
        {"type": "note.taken", "payload": {}},
        {"type": "billing.charged", "customer": "cus_2", "payload": {"amount": 12.5, "plan": "pro"}},
    ]  # fmt: skip
    for body in bodies:
        response = api.post_json(URL, body)
        assert response.status_code == 201, response.content
    cloud = {"specversion": "1.0", "id": "ev-1", "source": "/shop/eu", "type": "order.placed", "subject": "cus_1",
             "time": "2026-11-30T10:00:00.5Z", "data": {"n": 1, "total": 1e18}}  # fmt: skip
    other = make_client("shop")
    assert other.client.post(URL, orjson.dumps(cloud), content_type=STRUCTURED).status_code == 201
    old = api.post_json(URL, {"type": "note.taken", "customer": "cus_2", "payload": {"placeholder": 1}}).json()
    with triggers_off(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE events_event SET payload = %s WHERE id = %s", [orjson.dumps(BEYOND_64_BITS).decode(), old["id"]]
        )
    call_command("erase_customer", "cus_erased", "--yes", stdout=StringIO())
    return [str(i) for i in Event.objects.exclude(source__slug="auditsvc").values_list("id", flat=True)]


def test_it_renders_each_event_as_before(api, varied):
    events = {str(e.id): e for e in events_queryset().filter(id__in=varied)}
    for event_id in varied:
        response = api.client.get(f"{URL}/{event_id}")
        assert response.status_code == 200
        assert response.content == render(old_outputs([events[event_id]])[0]), event_id
    payloads = [orjson.loads(api.client.get(f"{URL}/{i}").content)["payload"] for i in varied]
    emails = {p.get("email") for p in payloads if p and "email" in p}
    # The cases the oracle is asked about are all there: readable, erased, unreadable.
    assert {"ana@example.com", protection.ERASED, protection.UNREADABLE} <= emails


@pytest.mark.parametrize("ordering", ["-occurred_at", "occurred_at", "-received_at", "type"])
@pytest.mark.parametrize("page_size", [3, 100])
def test_it_renders_every_page_and_link_as_before(api, varied, ordering, page_size):
    url, pages = f"http://testserver{URL}?ordering={ordering}&page_size={page_size}", 0
    while url:
        response = api.client.get(url)
        assert response.status_code == 200
        assert response.content == old_page(url)
        url, pages = orjson.loads(response.content)["next"], pages + 1
    assert pages == -(-Event.objects.count() // page_size)  # the log's own events are listed too


def test_it_renders_a_customers_timeline_and_page_mode_as_before(api, varied):
    for customer in ("cus_1", "cus_erased"):
        url = f"http://testserver/api/v1/customers/{customer}/events?page_size=2"
        while url:
            response = api.client.get(url)
            assert response.content == old_page(url, customer)
            url = orjson.loads(response.content)["next"]
    page = api.client.get(f"{URL}?page=2&page_size=4")
    assert page.content == old_page(f"http://testserver{URL}?page=2&page_size=4")


def test_it_renders_a_proof_with_the_event_as_stored(api, varied):
    seal_events(lag_seconds=0)
    for event in events_queryset().filter(id__in=varied):
        response = api.client.get(f"{URL}/{event.id}/proof")
        proof = proofs.inclusion_proof_for(event.id)
        assert response.content == render({"event": old_event_output(stored_event_from_row(event)), "proof": proof})


def test_a_payload_holding_a_number_beyond_64_bits_is_still_read(db):
    # The admin reads payloads through readable_payloads, which serialised them to search for
    # ciphertexts and raised for such a number (as the API's reads did before event_rows).
    payload = {"beyond": 10**20, "note": "x"}
    place = protection.Place("01a2424d-0000-7000-8000-000000000000", "billing", "note.taken", "cus_1")
    assert protection.readable_payloads([(payload, place)]) == [payload]

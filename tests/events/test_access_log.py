"""Every read through the API is itself an auditsvc.read event, stored in the background."""

from __future__ import annotations

import http.client
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.db import connection

from events.access_log import flush_access_log, pending_reads, record_read
from events.integrity.sealing import seal_events
from events.keys import create_api_key
from events.models import SERVICE_SOURCE, Event
from events.queries import seal_position
from events.service_events import READ_TYPE
from tests.factories import SourceFactory
from tests.processes import gunicorn


def reads() -> list[Event]:
    return list(Event.objects.filter(type__name=READ_TYPE).select_related("source").order_by("occurred_at", "id"))


@pytest.fixture
def stored(api) -> list[dict[str, Any]]:
    """Three events of cus_1 and cus_2, as the API answered them."""
    bodies = [
        {"type": "billing.charged", "customer": "cus_1", "payload": {"amount": 5}},
        {"type": "billing.charged", "customer": "cus_1", "payload": {"amount": 7}},
        {"type": "billing.failed", "customer": "cus_2"},
    ]
    response = api.post_json("/api/v1/events", {"events": bodies})
    assert response.status_code == 201
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def test_a_list_is_recorded_with_who_asked_what_and_how_many_it_returned(api, stored):
    response = api.client.get("/api/v1/events", {"type": "billing.charged", "page_size": 5}, HTTP_X_REQUEST_ID="r-1")
    assert response.status_code == 200 and len(response.json()["results"]) == 2
    assert reads() == []  # not stored in the read itself

    assert flush_access_log() == 1
    (read,) = reads()
    prefix = api.key.split("_")[1]
    assert read.source.slug == SERVICE_SOURCE and read.actor == f"key:{prefix}"
    assert read.payload == {
        "via": "api",
        "endpoint": "/api/v1/events",
        "returned": 2,
        "of": "events",
        "filters": {"type": "billing.charged", "page_size": "5"},
        "key_source": "billing",
        "request_id": "r-1",
    }
    assert read.description == f"key:{prefix} read 2 events via api /api/v1/events"


@pytest.mark.parametrize(
    ("path", "returned", "of", "details"),
    [
        ("/api/v1/events/{id}", 1, "events", {"event": "{id}", "customer": "cus_1"}),
        ("/api/v1/customers/cus_1/events", 2, "events", {"customer": "cus_1"}),
        ("/api/v1/customers/cus_1", 1, "customers", {"customer": "cus_1"}),
        ("/api/v1/customers", 2, "customers", {}),
        ("/api/v1/stats/counts?interval=hour", 1, "aggregates", {}),
        ("/api/v1/events/export", 3, "events", {}),
        ("/api/v1/events/export?format=csv&customer=cus_2", 1, "events", {}),
    ],
)
def test_each_kind_of_read_is_recorded(api, stored, path, returned, of, details):
    event_id = stored[0]["id"]
    response = api.client.get(path.format(id=event_id))
    assert response.status_code == 200
    if response.streaming:
        b"".join(response.streaming_content)  # an export records itself when it has been sent

    flush_access_log()
    (read,) = reads()
    assert read.payload["returned"] == returned and read.payload["of"] == of
    for key, value in details.items():
        assert read.payload[key] == value.format(id=event_id)


def test_a_proof_is_recorded_once_sealed(api, stored, settings):
    settings.AUDITSVC_SEAL_LAG_SECONDS = 0
    seal_events()
    response = api.client.get(f"/api/v1/events/{stored[0]['id']}/proof")
    assert response.status_code == 200

    flush_access_log()
    (read,) = reads()
    assert read.payload["endpoint"] == "/api/v1/events/{pk}/proof" and read.payload["event"] == stored[0]["id"]


def test_refused_reads_and_writes_are_not_recorded(api, stored):
    assert api.client.get("/api/v1/events/0190a4c2-0000-7000-8000-000000000000").status_code == 404
    assert api.client.get("/api/v1/events", {"nonsense": "1"}).status_code == 400
    assert api.post_json("/api/v1/events", {"type": "a.b"}).status_code == 201

    assert flush_access_log() == 0


def test_a_read_record_is_an_event_like_any_other_hashed_and_sealed(api, stored, settings):
    settings.AUDITSVC_SEAL_LAG_SECONDS = 0
    api.client.get("/api/v1/events", {"actor": "alice"})
    # What an admin page may be asked (its search box takes anything): kept, but storable.
    record_read(actor="staff:x", via="admin", endpoint="/admin/", returned=0, details={"q": "nul\x00" + "x" * 2000})
    flush_access_log()
    read, odd = reads()

    assert read.payload["filters"] == {"actor": "alice"}
    assert odd.payload["q"].startswith("nul\ufffdxx") and len(odd.payload["q"]) == 500
    seal_events()
    assert seal_position(read.id) is not None


def test_reading_can_be_turned_off(api, stored, settings):
    settings.AUDITSVC_AUDIT_READS = False
    assert api.client.get("/api/v1/events").status_code == 200

    assert pending_reads() == 0


def test_services_may_not_send_the_logs_own_types(api, make_client):
    refused = api.post_json("/api/v1/events", {"events": [{"type": "a.b"}, {"type": "auditsvc.read"}]})

    assert refused.status_code == 400
    assert refused.json()["errors"] == [
        {"field": "events[1].type", "code": "reserved_type", "message": "Types beginning auditsvc. are the log's own."}
    ]
    assert not Event.objects.exists()
    with pytest.raises(ValueError, match="the log's own"):
        create_api_key(source=SourceFactory.create(slug=SERVICE_SOURCE), scopes=["ingest"])


def get(url: str, path: str, key: str) -> int:
    parts = urlsplit(url)
    client = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    client.request("GET", path, headers={"Authorization": f"Bearer {key}"})
    status = client.getresponse().status
    client.close()
    return status


def committed_reads() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM events_event e JOIN events_eventtype t ON t.id = e.type_id WHERE t.name = %s",
            [READ_TYPE],
        )
        (count,) = cursor.fetchone()
    return int(count)


@pytest.mark.django_db(transaction=True)  # the server's own thread stores them
def test_under_gunicorn_reads_are_stored_in_the_background():
    key = create_api_key(source=SourceFactory.create(slug="billing"), scopes=["read"]).plaintext
    with gunicorn(AUDITSVC_AUDIT_READS_FLUSH_SECONDS="0.2") as url:
        assert all(get(url, "/api/v1/events", key) == 200 for _ in range(5))
        deadline = time.monotonic() + 10
        while committed_reads() < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert committed_reads() == 5  # while the server runs


@pytest.mark.django_db(transaction=True)
def test_a_graceful_shutdown_stores_every_read_gathered():
    key = create_api_key(source=SourceFactory.create(slug="billing"), scopes=["read"]).plaintext
    with gunicorn(workers=2, AUDITSVC_AUDIT_READS_FLUSH_SECONDS="600") as url:  # never before the stop
        for _ in range(20):
            assert get(url, "/api/v1/events", key) == 200
        assert committed_reads() == 0
    assert committed_reads() == 20  # gunicorn stopped (SIGTERM): each worker stored its own


def test_reads_wait_in_memory_while_they_cannot_be_stored(db, settings):
    settings.AUDITSVC_AUDIT_READS_MAX_PENDING = 100
    for n in range(101):
        record_read(actor="key:abc", via="api", endpoint="/api/v1/events", returned=n, details={})

    assert pending_reads() == 100  # the 101st is counted as unrecorded, not kept
    assert flush_access_log() == 100 and pending_reads() == 0

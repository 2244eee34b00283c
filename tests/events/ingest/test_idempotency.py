"""Idempotent ingestion: a retried event is stored once, even when the retries race."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.test import override_settings

from events.keys import create_api_key
from events.models import Event, IdempotencyKey
from tests.factories import SourceFactory

# Production's write path: every single event through the group committer (issue 24, item 8).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("production_write_path")]

URL = "/api/v1/events"
EVENT = {"type": "billing.charged", "customer": "cus_1", "payload": {"amount": 5}, "idempotency_key": "charge-1"}


def test_a_retry_returns_the_stored_event_and_stores_nothing(api):
    first = api.post_json(URL, EVENT)
    second = api.post_json(URL, EVENT)

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json() == first.json()
    assert Event.objects.count() == 1


def test_the_header_key_works_for_a_single_event(api):
    body = {"type": "a.b", "payload": {"x": 1}}
    first = api.post_json(URL, body, **{"Idempotency-Key": "hdr-1"})
    second = api.post_json(URL, body, **{"Idempotency-Key": "hdr-1"})

    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"]
    assert Event.objects.get().idempotency_key == "hdr-1"


def test_a_header_and_field_that_disagree_are_rejected(api):
    response = api.post_json(URL, {**EVENT}, **{"Idempotency-Key": "other"})

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "conflicting_idempotency_key"


def test_the_header_is_refused_on_a_batch(api):
    response = api.post_json(URL, {"events": [{"type": "a.b"}]}, **{"Idempotency-Key": "k"})

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"


def test_the_same_key_with_another_body_is_a_409(api):
    api.post_json(URL, EVENT)

    response = api.post_json(URL, {**EVENT, "payload": {"amount": 6}})

    assert response.status_code == 409
    assert response.json()["errors"] == [
        {
            "field": "idempotency_key",
            "code": "idempotency_key_reused",
            "message": "This idempotency key is held by another event (for the dedupe window; for good if imported).",
        }
    ]
    assert Event.objects.count() == 1


def test_keys_are_per_source(make_client):
    billing, shipping = make_client("billing"), make_client("shipping")

    assert billing.post_json(URL, EVENT).status_code == 201
    assert shipping.post_json(URL, EVENT).status_code == 201
    assert Event.objects.count() == 2


def test_a_batch_mixing_new_and_repeated_events(api):
    api.post_json(URL, EVENT)
    batch = [EVENT, {"type": "a.b", "idempotency_key": "new-1"}, {"type": "a.b"}]

    response = api.post_json(URL, {"events": batch})

    body = response.json()
    assert response.status_code == 201
    assert (body["created"], body["duplicates"]) == (2, 1)
    assert Event.objects.count() == 3


def test_a_batch_repeating_a_key_inside_itself_stores_it_once(api):
    response = api.post_json(URL, {"events": [EVENT, EVENT]})

    body = response.json()
    assert (body["created"], body["duplicates"]) == (1, 1)
    assert body["events"][0]["id"] == body["events"][1]["id"]
    assert Event.objects.count() == 1


def test_a_batch_reusing_a_key_for_two_bodies_is_rejected_whole(api):
    response = api.post_json(URL, {"events": [{"type": "ok.first"}, EVENT, {**EVENT, "actor": "mallory"}]})

    assert response.status_code == 409
    assert response.json()["errors"][0]["field"] == "events[2].idempotency_key"
    assert Event.objects.count() == 0
    assert IdempotencyKey.objects.count() == 0


@override_settings(AUDITSVC_IDEMPOTENCY_WINDOW_SECONDS=3600)
def test_a_key_can_be_reused_after_the_dedupe_window(api):
    start = datetime.now(UTC)
    with time_machine.travel(start, tick=False):
        first = api.post_json(URL, EVENT)
    with time_machine.travel(start + timedelta(minutes=30), tick=False):
        inside = api.post_json(URL, EVENT)
    with time_machine.travel(start + timedelta(hours=2), tick=False):
        after = api.post_json(URL, {**EVENT, "payload": {"amount": 7}})

    assert (first.status_code, inside.status_code, after.status_code) == (201, 200, 201)
    assert Event.objects.count() == 2
    assert IdempotencyKey.objects.get().event_id == Event.objects.get(payload__amount=7).id


@override_settings(AUDITSVC_IDEMPOTENCY_WINDOW_SECONDS=3600)
def test_purging_forgets_expired_keys_only_and_keeps_every_event(api):
    start = datetime.now(UTC)
    with time_machine.travel(start - timedelta(hours=2), tick=False):
        api.post_json(URL, {"events": [{**EVENT, "idempotency_key": f"old-{n}"} for n in range(3)]})
    api.post_json(URL, {**EVENT, "idempotency_key": "fresh"})
    out = StringIO()

    call_command("purge_idempotency_keys", stdout=out)

    assert out.getvalue() == "Deleted 3 expired idempotency keys.\n"
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["fresh"]
    assert Event.objects.count() == 4
    assert api.post_json(URL, {**EVENT, "idempotency_key": "fresh"}).status_code == 200  # still deduplicated


def test_concurrent_retries_store_one_event(live_server):
    source = SourceFactory.create(slug="racer")
    key = create_api_key(source=source, scopes=["ingest"]).plaintext
    events = [EVENT] + [{"type": "a.b", "idempotency_key": f"k{n}"} for n in range(50)]
    body = json.dumps({"events": events}).encode()
    # Every thread sends the identical batch at the same moment.
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def post() -> None:
        request = urllib.request.Request(
            f"{live_server.url}{URL}",
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        barrier.wait()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                statuses.append(response.status)
        except urllib.error.HTTPError as exc:
            statuses.append(exc.code)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200] * 7 + [201]
    assert Event.objects.count() == 51
    assert Event.objects.filter(idempotency_key="charge-1").count() == 1

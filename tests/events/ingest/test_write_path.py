"""The write path survives a database that changed under its caches (a restore, a failover)."""

from __future__ import annotations

import pytest

from events.models import Event, EventType
from tests.database import truncate

pytestmark = pytest.mark.django_db(transaction=True)  # the foreign keys are checked at commit


def restore_an_older_backup() -> None:
    """What a restore does to the cached rows: types and customers this process knows are gone."""
    truncate("events_event", "events_eventtype", "customers_customer")


def test_it_drops_its_id_caches_and_retries_when_the_database_lost_their_rows(api):
    body = {"type": "billing.charged", "customer": "cus_1", "payload": {"n": 1}}
    assert api.post_json("/api/v1/events", body).status_code == 201
    restore_an_older_backup()

    again = api.post_json("/api/v1/events", {**body, "payload": {"n": 2}})

    assert again.status_code == 201, again.json()
    stored = Event.objects.select_related("type", "customer").get()
    assert (stored.type.name, stored.customer.external_id if stored.customer else None) == ("billing.charged", "cus_1")
    assert EventType.objects.count() == 1


def test_a_batch_after_a_restore_is_stored_whole(api):
    assert api.post_json("/api/v1/events", {"events": [{"type": f"t.{n}"} for n in range(30)]}).status_code == 201
    restore_an_older_backup()

    again = api.post_json("/api/v1/events", {"events": [{"type": f"t.{n}", "customer": "c"} for n in range(30)]})

    assert again.status_code == 201, again.json()
    assert Event.objects.count() == 30

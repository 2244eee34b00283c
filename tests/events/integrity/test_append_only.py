"""The database itself refuses to change or remove a stored event."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from events.models import Event

URL = "/api/v1/events"


@pytest.fixture
def stored_event(api) -> Event:
    api.post_json(URL, {"type": "a.b", "payload": {"x": 1}})
    return Event.objects.get()


def test_update_is_rejected(stored_event):
    with pytest.raises(DatabaseError, match="append-only: UPDATE"), transaction.atomic():
        Event.objects.filter(pk=stored_event.pk).update(actor="mallory")
    assert Event.objects.get().actor is None


def test_delete_is_rejected(stored_event):
    with pytest.raises(DatabaseError, match="append-only: DELETE"), transaction.atomic():
        Event.objects.filter(pk=stored_event.pk).delete()
    assert Event.objects.count() == 1


def test_raw_sql_update_is_rejected(stored_event):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE events_event SET payload = '{}'::jsonb")
    assert Event.objects.get().payload == {"x": 1}

"""What the lifecycle tests ask of the database."""

from __future__ import annotations

import uuid

from django.db import connection


def partition_of(event_id: uuid.UUID) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM events_event WHERE id = %s", [event_id])
        return str(cursor.fetchone()[0])

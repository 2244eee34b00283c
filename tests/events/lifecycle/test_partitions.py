"""Monthly partitions: made ahead and on demand, append-only, listed, and pruned by reads."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext

from events.integrity.sealing import seal_events
from events.lifecycle import partitions
from events.lifecycle.partitions import Month
from events.models import Event
from tests.events.ingest.test_import_export import run_import, write_lines
from tests.events.lifecycle.helpers import partition_of

THIS_MONTH = Month.of(datetime.now(UTC))


def explain(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}")
        return "\n".join(row[0] for row in cursor.fetchall())


def test_the_command_makes_the_months_ahead_and_lists_every_partition(db, api):
    assert api.post_json("/api/v1/events", {"type": "a.b"}).status_code == 201
    out = StringIO()

    call_command("partitions", "--ahead", "5", "--exact", stdout=out)

    names = {p.table for p in partitions.partitions()}
    assert {THIS_MONTH.plus(n).table for n in range(6)} <= names
    listing = out.getvalue()
    row = next(line for line in listing.splitlines() if line.startswith(THIS_MONTH.table))
    assert row.split()[1:3] == [str(THIS_MONTH), "1"]  # its months, its one event
    assert row.split()[-1] == "0.0%"  # stored, not sealed yet
    assert f"{THIS_MONTH.plus(5)}" in listing


def test_the_bounds_are_the_uuid7_floors_of_each_months_first_instant():
    march = Month(2026, 3)
    assert march.lower.int >> 80 == int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)
    assert march.upper == Month(2026, 4).lower
    assert Month(2026, 12).next() == Month(2027, 1)
    assert Month.of_id(march.lower) == march
    assert Month.of_id(partitions.uuid7_floor(datetime(2026, 3, 31, 23, 59, 59, 999000, tzinfo=UTC))) == march


@pytest.mark.django_db(transaction=True)
def test_a_partition_made_on_demand_is_append_only_like_the_rest(api):
    month = Month(2018, 7)
    assert partitions.ensure_partitions([month]).created == [month]
    assert partitions.ensure_partitions([month]).created == []  # once

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {month.table}")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'events_event'::regclass AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'"
        )
        assert cursor.fetchone() == (0,)


@pytest.mark.django_db(transaction=True)
def test_a_write_after_its_partition_vanished_makes_it_again(api):
    assert api.post_json("/api/v1/events", {"type": "a.b"}).status_code == 201  # the month is known now
    with connection.cursor() as cursor:  # as retention in another process would (here: the month's events too)
        cursor.execute(f"ALTER TABLE events_event DETACH PARTITION {THIS_MONTH.table}")
        cursor.execute(f"DROP TABLE {THIS_MONTH.table}")

    response = api.post_json("/api/v1/events", {"type": "a.b"})

    assert response.status_code == 201, response.json()
    assert partition_of(response.json()["id"]) == THIS_MONTH.table


@pytest.mark.django_db(transaction=True)
def test_occurred_after_reads_only_the_partitions_that_can_hold_a_match_and_misses_nothing(api, tmp_path):
    # Received two minutes before the month turned, occurring two minutes after it: in
    # January's partition, yet found by occurred_after=February (the skew is 5 minutes).
    records = [
        {"type": "a.b", "received_at": "2025-01-31T23:58:00Z", "occurred_at": "2025-02-01T00:02:00Z"},
        {"type": "a.b", "received_at": "2024-11-10T10:00:00Z", "occurred_at": "2024-11-10T10:00:00Z"},
    ]
    path = write_lines(tmp_path / "e.ndjson", [json.dumps({**r, "source": "billing"}) for r in records])
    assert run_import(str(path))[0] == 0
    partitions.ensure_partitions([Month(2024, 6)])

    with CaptureQueriesContext(connection) as queries:
        response = api.client.get("/api/v1/events", {"occurred_after": "2025-02-01T00:00:00Z"})

    assert [e["occurred_at"] for e in response.json()["results"]] == ["2025-02-01T00:02:00.000000Z"]
    plan = explain(next(q["sql"] for q in queries.captured_queries if 'FROM "events_event"' in q["sql"]))
    assert "events_event_y2025m01" in plan  # the skew reaches back into January
    assert "events_event_y2024m11" not in plan and "events_event_y2024m06" not in plan


@pytest.mark.django_db(transaction=True)
def test_received_bounds_prune_too(api, tmp_path):
    record = {"type": "a.b", "received_at": "2024-11-10T10:00:00Z", "source": "billing"}
    assert run_import(str(write_lines(tmp_path / "e.ndjson", [json.dumps(record)])))[0] == 0
    api.post_json("/api/v1/events", {"type": "a.b"})

    with CaptureQueriesContext(connection) as queries:
        response = api.client.get(
            "/api/v1/events", {"received_after": "2024-11-01T00:00:00Z", "received_before": "2024-12-01T00:00:00Z"}
        )

    assert [e["received_at"] for e in response.json()["results"]] == ["2024-11-10T10:00:00.000000Z"]
    plan = explain(next(q["sql"] for q in queries.captured_queries if 'FROM "events_event"' in q["sql"]))
    assert "events_event_y2024m11" in plan and THIS_MONTH.table not in plan
    assert Event.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_the_sealer_reads_only_the_partitions_of_the_events_it_seals(api, tmp_path, settings):
    settings.AUDITSVC_SEAL_LAG_SECONDS = 0
    record = {"type": "a.b", "received_at": "2024-11-10T10:00:00Z", "source": "billing"}
    assert run_import(str(write_lines(tmp_path / "e.ndjson", [json.dumps(record)])))[0] == 0
    assert [s.event_count for s in seal_events()] == [1]
    api.post_json("/api/v1/events", {"type": "a.b"})

    with CaptureQueriesContext(connection) as queries:
        assert [s.event_count for s in seal_events()] == [1]

    fetch = next(q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT id, hash FROM events_event"))
    plan = explain(fetch)
    assert THIS_MONTH.table in plan and "events_event_y2024m11" not in plan

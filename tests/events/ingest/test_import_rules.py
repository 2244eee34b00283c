"""import_events: a re-run is exact for every record shape, one bad record never aborts the
run, and the importer and the API agree on idempotency keys."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from events.ids import uuid7, uuid7_time
from events.models import Event, IdempotencyKey
from tests.events.ingest.test_import_export import run_import, write_lines
from tests.events.lifecycle.helpers import partition_of
from tests.factories import SourceFactory

pytestmark = pytest.mark.django_db(transaction=True)  # the importer's workers commit for real


@pytest.fixture
def billing(db):
    return SourceFactory.create(slug="billing")


def deeply_nested(levels: int) -> str:
    """A payload nested `levels` deep, as JSON text (json.dumps itself gives up near 1,000)."""
    return '{"a": ' * (levels - 1) + "{}" + "}" * (levels - 1)


def test_a_record_with_its_own_id_but_no_received_at_is_stored_once(billing, tmp_path):
    event_id = uuid7()
    path = write_lines(tmp_path / "e.ndjson", [json.dumps({"id": str(event_id), "type": "a.b", "payload": {"n": 1}})])

    first, second = run_import(str(path), "--source", "billing"), run_import(str(path), "--source", "billing")

    stored = Event.objects.get()
    assert first[1].endswith("stored 1, duplicates skipped 0, rejected 0\n")
    assert second[1].endswith("stored 0, duplicates skipped 1, rejected 0\n")
    assert stored.id == event_id
    assert stored.received_at == uuid7_time(event_id)  # the instant its id encodes


def test_a_record_with_received_at_but_no_id_gets_an_id_of_that_instant_in_its_months_partition(billing, tmp_path):
    received = datetime(2019, 3, 14, 15, 9, 26, tzinfo=UTC)
    record = {"type": "a.b", "received_at": received.isoformat(), "occurred_at": "2019-03-14T15:00:00Z"}
    path = write_lines(tmp_path / "e.ndjson", [json.dumps(record)])

    first, second = run_import(str(path), "--source", "billing"), run_import(str(path), "--source", "billing")

    assert first[1].endswith("stored 1, duplicates skipped 0, rejected 0\n")
    assert second[1].endswith("stored 0, duplicates skipped 1, rejected 0\n")  # the derived key
    stored = Event.objects.get()
    assert (stored.received_at, uuid7_time(stored.id)) == (received, received)
    assert partition_of(stored.id) == "events_event_y2019m03"  # made on demand


def test_an_id_of_ours_that_does_not_say_its_received_at_is_a_reject(billing, tmp_path):
    # (Another store's id, not a UUIDv7, with received_at: tests/events/ingest/test_import_foreign_ids.py.)
    lines = [json.dumps({"id": str(uuid7()), "received_at": "2026-01-05T10:00:00Z", "type": "a.b"})]
    path = write_lines(tmp_path / "e.ndjson", lines)

    status, _ = run_import(str(path), "--source", "billing", "--rejects", str(tmp_path / "r.ndjson"))

    rejects = [json.loads(line) for line in (tmp_path / "r.ndjson").read_text().splitlines()]
    assert (status, Event.objects.count()) == (1, 0)
    assert [(r["line"], r["errors"][0]["field"], r["errors"][0]["code"]) for r in rejects] == [
        (1, "id", "id_not_of_received_at"),
    ]


def test_an_event_that_occurs_long_after_its_receipt_is_a_reject(billing, tmp_path):
    record = {"type": "a.b", "received_at": "2025-01-05T10:00:00Z", "occurred_at": "2025-01-05T11:00:00Z"}
    path = write_lines(tmp_path / "e.ndjson", [json.dumps(record)])

    status, _ = run_import(str(path), "--source", "billing", "--rejects", str(tmp_path / "r.ndjson"))

    reject = json.loads((tmp_path / "r.ndjson").read_text())
    assert (status, Event.objects.count()) == (1, 0)
    assert (reject["errors"][0]["field"], reject["errors"][0]["code"]) == ("occurred_at", "in_future")


def test_a_line_inserted_at_the_top_changes_no_other_records_key(billing, tmp_path):
    lines = [json.dumps({"type": "a.b", "payload": {"n": n}}) for n in range(5)]
    path = write_lines(tmp_path / "e.ndjson", lines)
    run_import(str(path), "--source", "billing")

    write_lines(path, [json.dumps({"type": "a.new"}), *lines])
    status, out = run_import(str(path), "--source", "billing")

    assert (status, Event.objects.count()) == (0, 6)
    assert out.endswith("read 6, stored 1, duplicates skipped 5, rejected 0\n")


def test_identical_records_without_keys_are_each_stored_once(billing, tmp_path):
    same = json.dumps({"type": "user.logged_in", "customer": "cus_1"})
    path = write_lines(tmp_path / "e.ndjson", [same, json.dumps({"type": "other"}), same])
    run_import(str(path), "--source", "billing")

    write_lines(path, [same, json.dumps({"type": "other"}), same, same])  # one more login
    status, out = run_import(str(path), "--source", "billing")

    assert status == 0
    assert Event.objects.filter(type__name="user.logged_in").count() == 3
    assert out.endswith("read 4, stored 1, duplicates skipped 3, rejected 0\n")


@pytest.mark.parametrize(
    ("record", "field", "code"),
    [
        ({"received_at": "2026-02-30T10:00:00Z"}, "received_at", "invalid_datetime"),
        ({"received_at": "2026-01-01T24:00:00Z"}, "received_at", "invalid_datetime"),
        ({"occurred_at": "2026-02-30T10:00:00Z"}, "occurred_at", "invalid_datetime"),
        ({"payload": json.loads(deeply_nested(40))}, "payload", "nesting_too_deep"),
        (deeply_nested(300), None, "nesting_too_deep"),  # beyond what orjson writes
        (deeply_nested(1000), None, "nesting_too_deep"),  # beyond Python's recursion limit
    ],
    ids=["feb-30", "hour-24", "occurred-feb-30", "deep-40", "deep-300", "deep-1000"],
)  # fmt: skip
def test_an_impossible_record_is_a_reject_with_its_line_and_the_run_goes_on(billing, tmp_path, record, field, code):
    line = (
        json.dumps({"type": "a.b", **record}) if isinstance(record, dict) else f'{{"type": "x", "payload": {record}}}'
    )

    lines = [json.dumps({"type": "ok.before"}), line, json.dumps({"type": "ok.after"})]
    path = write_lines(tmp_path / "e.ndjson", lines)

    status, out = run_import(str(path), "--source", "billing", "--rejects", str(tmp_path / "r.ndjson"))

    reject = json.loads((tmp_path / "r.ndjson").read_text())
    assert status == 1, out
    assert sorted(Event.objects.values_list("type__name", flat=True)) == ["ok.after", "ok.before"]
    assert (reject["line"], reject["errors"][0]["field"], reject["errors"][0]["code"]) == (2, field, code)


def test_one_duplicate_id_in_a_batch_rejects_only_that_record(billing, tmp_path):
    event_id = str(uuid7())
    received = (uuid7_time(uuid.UUID(event_id)) or timezone.now()).isoformat()
    lines = [
        json.dumps({"id": event_id, "received_at": received, "type": "a.b", "payload": {"n": 1}}),
        json.dumps({"type": "c.d"}),
        json.dumps({"id": event_id, "received_at": received, "type": "a.b", "payload": {"n": 2}}),  # another event
        json.dumps({"id": event_id, "received_at": received, "type": "a.b", "payload": {"n": 1}}),  # the same again
    ]
    path = write_lines(tmp_path / "e.ndjson", lines)

    status, out = run_import(str(path), "--source", "billing", "--rejects", str(tmp_path / "r.ndjson"))

    reject = json.loads((tmp_path / "r.ndjson").read_text())
    assert status == 1
    assert "read 4, stored 2, duplicates skipped 1, rejected 1\n" in out
    assert (reject["line"], reject["errors"][0]["code"], reject["errors"][0]["field"]) == (3, "duplicate_id", "id")


def test_reimporting_an_export_where_the_api_keys_still_live_counts_duplicates(api, tmp_path):
    for n in range(3):  # as the service sent them: no occurred_at, its own keys
        assert (
            api.post_json(
                "/api/v1/events", {"type": "a.b", "payload": {"n": n}, "idempotency_key": f"k{n}"}
            ).status_code
            == 201
        )
    export = tmp_path / "export.ndjson"
    export.write_bytes(b"".join(api.client.get("/api/v1/events/export").streaming_content))  # type: ignore[attr-defined]

    status, out = run_import(str(export))

    assert (status, Event.objects.count()) == (0, 3), out
    assert out.endswith("read 3, stored 0, duplicates skipped 3, rejected 0\n")


def test_an_api_retry_of_an_imported_event_is_a_repeat_not_a_409(api, tmp_path):
    body = {"type": "a.b", "payload": {"n": 1}, "idempotency_key": "order-7"}
    path = write_lines(tmp_path / "e.ndjson", [json.dumps({**body, "occurred_at": "2026-11-30T10:00:00Z"})])
    run_import(str(path), "--source", "billing")
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(days=90))  # long ago, for good

    retry = api.post_json("/api/v1/events", body)  # the service's own retry, without occurred_at
    other = api.post_json("/api/v1/events", {**body, "payload": {"n": 2}})

    assert retry.status_code == 200
    assert retry.json()["occurred_at"] == "2026-11-30T10:00:00.000000Z"
    assert other.status_code == 409
    assert Event.objects.count() == 1


def test_uuid7_time_is_exact_to_the_millisecond():
    millis = 1_764_576_000_123  # 2025-12-01T08:00:00.123Z
    made = uuid.UUID(int=(millis << 80) | (0x7 << 76) | (0xABC << 64) | (0b10 << 62) | 12345)

    assert uuid7_time(made) == datetime(2025, 12, 1, 8, 0, 0, 123000, tzinfo=UTC)
    assert uuid7_time(uuid.uuid4()) is None


def test_the_logs_own_source_is_never_imported(billing, tmp_path):
    """A file could otherwise add backdated auditsvc.* records (reads, retirements) under the seals."""
    SourceFactory.create(slug="auditsvc")
    backdated = {"type": "auditsvc.retention.applied", "source": "auditsvc", "received_at": "2020-01-01T00:00:00Z"}
    path = write_lines(tmp_path / "e.ndjson", [json.dumps(backdated), json.dumps({"type": "a.b", "source": "billing"})])

    status, out = run_import(str(path), "--rejects", str(tmp_path / "r.ndjson"))

    reject = json.loads((tmp_path / "r.ndjson").read_text())
    assert status == 1, out
    error = reject["errors"][0]
    assert (reject["line"], error["field"], error["code"]) == (1, "source", "reserved_source")
    assert list(Event.objects.values_list("source__slug", flat=True)) == ["billing"]
    with pytest.raises(Exception, match="this log's own and are not imported"):
        run_import(str(path), "--source", "auditsvc")
    assert Event.objects.count() == 1

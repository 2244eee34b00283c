"""Issue 24, items 1 and 2: retention never drops an acknowledged event, and nothing outside
the sealed chain can excuse a missing sealed event."""

from __future__ import annotations

import json
import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from events.ingest import stream
from events.integrity.sealing import seal_events
from events.integrity.verification import verify_integrity
from events.lifecycle import archives, partitions
from events.lifecycle.retention import RetentionRefused, apply_retention, closed_contents, drop_retired
from events.models import Event, LostEvent, PendingSeal, RetiredPartition
from events.service_events import store_service_event
from tests.database import drop_past_partitions, triggers_off
from tests.events.ingest.test_import_export import run_import, write_lines
from tests.events.lifecycle.test_retention import JANUARY, old_events

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_old_partitions(transactional_db):
    drop_past_partitions()


def late_event(tmp_path):
    record = {"type": "user.login", "source": "billing", "actor": "late", "received_at": f"{JANUARY}-28T08:00:00Z"}
    return write_lines(tmp_path / "late.ndjson", [json.dumps(record)])


def january() -> partitions.Partition:
    return next(p for p in partitions.partitions() if p.table == JANUARY.table)


@pytest.fixture
def sealed_january(api, tmp_path, settings):
    settings.AUDITSVC_SEAL_LAG_SECONDS = 0
    assert run_import(str(old_events(tmp_path, JANUARY, 4, "jan.ndjson")))[0] == 0
    assert api.post_json("/api/v1/events", {"type": "user.login"}).status_code == 201
    assert seal_events()
    settings.AUDITSVC_RETENTION_DAYS = 400
    return api


def kinds(report) -> list[tuple[str, str | None]]:
    return [(f.kind, f.event_id) for f in report.findings]


def test_an_import_into_a_month_closed_for_retirement_is_refused_and_not_acknowledged(sealed_january, tmp_path):
    # Retention's first step, committed before it archives: from here on the month takes nothing.
    partitions.refuse_writes(january())
    late = late_event(tmp_path)
    rejects = tmp_path / "rejects.ndjson"

    status, _ = run_import(str(late), "--rejects", str(rejects))

    assert status == 1
    error = json.loads(rejects.read_text())["errors"][0]
    assert (error["field"], error["code"]) == ("received_at", "retention_expired")
    assert Event.objects.filter(received_at__year=2024).count() == 4
    apply_retention(archive_dir=tmp_path / "archives")
    assert verify_integrity(archive_dir=tmp_path / "archives").ok


def test_the_drop_refuses_a_partition_that_changed_after_it_was_archived(sealed_january, tmp_path):
    partition = january()
    partitions.refuse_writes(partition)
    contents = closed_contents(partition)
    # Someone with the power to lift the CHECK adds a row between the archive and the drop.
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {partition.table} DROP CONSTRAINT {partitions.RETIRING_CONSTRAINT}")
    assert run_import(str(late_event(tmp_path)))[0] == 0

    with pytest.raises(RetentionRefused, match="changed after they were archived"):
        drop_retired(partition, contents=contents, manifest={"lower_id": None, "upper_id": None},
                     cutoff=timezone.now(), archive_dir=None)  # fmt: skip

    assert JANUARY.table in {p.table for p in partitions.partitions()}
    assert Event.objects.filter(received_at__year=2024).count() == 5
    assert not RetiredPartition.objects.exists()


def test_the_archive_directory_is_synced_before_the_partition_goes(sealed_january, tmp_path, monkeypatch):
    synced: list[str] = []
    real = archives.fsync_directory

    def recorded(directory):
        synced.append(str(directory))
        real(directory)

    monkeypatch.setattr(archives, "fsync_directory", recorded)

    apply_retention(archive_dir=tmp_path / "archives")

    assert synced.count(str(tmp_path / "archives")) == 2  # after the archive's rename, after the manifest's


def test_a_forged_retirement_does_not_excuse_a_deleted_sealed_event(sealed_january):
    victim = Event.objects.filter(received_at__year=2024).order_by("id").first()
    assert victim is not None
    # A database superuser deletes one sealed event and inserts a one-id "retirement" around it.
    with triggers_off(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM events_event WHERE id = %s", [victim.id])
    RetiredPartition.objects.create(
        table="events_event_forged", lower_id=victim.id, upper_id=uuid.UUID(int=victim.id.int + 1),
        retired_at=timezone.now(), event_count=1,
    )  # fmt: skip

    report = verify_integrity()

    assert ("event_missing", str(victim.id)) in kinds(report)
    assert ("retirement_unrecorded", None) in kinds(report)
    assert report.archived_events == 0


def test_a_forged_retirement_record_that_is_not_sealed_excuses_nothing_silently(sealed_january, settings):
    victim = Event.objects.filter(received_at__year=2024).order_by("id").first()
    assert victim is not None
    with triggers_off(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM events_event WHERE id = %s", [victim.id])
    high = uuid.UUID(int=victim.id.int + 1)
    RetiredPartition.objects.create(table="events_event_forged", lower_id=victim.id, upper_id=high,
                                    retired_at=timezone.now(), event_count=1)  # fmt: skip
    store_service_event(type="auditsvc.retention.applied", actor="mallory", description="forged", payload={
        "partitions": [{"table": "events_event_forged", "lower_id": str(victim.id), "upper_id": str(high),
                        "events": 1, "sealed_digest": "0" * 64}]})  # fmt: skip

    report = verify_integrity()

    assert not report.ok
    assert "retirement_mismatch" in {f.kind for f in report.findings}  # the digest is not the seal entries'
    assert ("event_missing", str(victim.id)) in kinds(report)


def test_a_real_retirement_is_accepted_and_a_tampered_index_row_is_a_finding(sealed_january, tmp_path):
    apply_retention(archive_dir=tmp_path / "archives")
    assert verify_integrity(archive_dir=tmp_path / "archives").ok

    with triggers_off(), connection.cursor() as cursor:
        cursor.execute('UPDATE events_retiredpartition SET event_count = 3 WHERE "table" = %s', [JANUARY.table])

    assert "retirement_mismatch" in {f.kind for f in verify_integrity().findings}


def test_pending_seal_rows_of_vanished_events_do_not_stall_the_sealer(api, settings):
    settings.AUDITSVC_SEAL_LAG_SECONDS = 0
    long_ago = timezone.now().replace(year=2025)
    gone = [uuid.uuid4() for _ in range(5)]
    PendingSeal.objects.bulk_create(PendingSeal(event_id=i, received_at=long_ago) for i in gone)
    assert api.post_json("/api/v1/events", {"type": "user.login"}).status_code == 201

    seals = seal_events(max_events=3)  # every batch the queue's oldest rows would fill is of lost ones

    assert sum(s.event_count for s in seals) == 1
    assert not PendingSeal.objects.exists()
    assert set(LostEvent.objects.values_list("event_id", flat=True)) == set(gone)
    err = StringIO()
    call_command("healthcheck", "--sealer", stdout=StringIO(), stderr=err)  # healthy: exits 0
    assert "5 acknowledged events were gone before their seal" in err.getvalue()
    assert str(sorted(gone, key=str)[0]) in err.getvalue() or all(str(i) in err.getvalue() for i in gone)
    assert {("event_lost", str(i)) for i in gone} <= set(kinds(verify_integrity()))


def test_retention_waits_for_stream_entries_of_the_months_it_would_retire(sealed_january, stream_mode, settings):
    """A 202 in stream mode is an acknowledgement too: a month is not retired while an entry
    accepted in it waits for the drainer (here in a shard no longer served, as after lowering
    AUDITSVC_STREAM_SHARDS; an entry's id is its XADD time, so it stands for one of January)."""
    queued = sealed_january.post_json("/api/v1/events", {"type": "user.login", "actor": "waiting"})
    assert queued.status_code == 202
    redis_client = stream.client()
    [(entry_id, fields)] = redis_client.xrange(stream.stream_key(0))
    redis_client.xdel(stream.stream_key(0), entry_id)
    january_ms = int(JANUARY.start.timestamp() * 1000) + 3_600_000
    redis_client.xadd(stream.stream_key(1), fields, id=f"{january_ms}-0")

    with pytest.raises(RetentionRefused, match="1 accepted events still wait in the stream"):
        apply_retention(archive_dir=None)
    assert JANUARY.table in {p.table for p in partitions.partitions()}
    assert JANUARY.table not in partitions.refusing_writes()

    call_command("drain_events", "--once", stdout=StringIO())
    assert seal_events(lag_seconds=0)
    report = apply_retention(archive_dir=None)

    assert [r.partition.table for r in report.retired] == [JANUARY.table]
    assert Event.objects.filter(actor="waiting", id=queued.json()["id"]).exists()

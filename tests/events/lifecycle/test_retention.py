"""Retention end to end: old events imported and sealed, retention applied, the archive and
its manifest checked, verify_events passing with and without the archives."""

from __future__ import annotations

import gzip
import json
from io import StringIO
from pathlib import Path

import orjson
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from events.integrity.sealing import seal_events
from events.integrity.verify_proof import check
from events.lifecycle import archives, partitions
from events.lifecycle.partitions import Month
from events.lifecycle.retention import RetentionRefused, apply_retention
from events.models import Event, PendingSeal, RetiredPartition, Seal
from tests.events.ingest.test_import_export import run_import, write_lines

pytestmark = pytest.mark.django_db(transaction=True)  # the importer's workers commit for real

JANUARY, FEBRUARY = Month(2024, 1), Month(2024, 2)


def old_events(tmp_path: Path, month: Month, count: int, name: str) -> Path:
    records = [
        {"type": "user.login", "source": "billing", "actor": f"user-{n}", "payload": {"n": n},
         "received_at": f"{month}-{n + 10:02d}T08:00:00Z", "occurred_at": f"{month}-{n + 10:02d}T07:59:00Z"}
        for n in range(count)
    ]  # fmt: skip
    return write_lines(tmp_path / name, [json.dumps(r) for r in records])


@pytest.fixture(autouse=True)
def _no_old_partitions_of_other_tests(transactional_db):
    # Partitions outlive the rows a test's flush empties: older (empty) months that other tests
    # made would be retired here too. Dropping empty partitions is what retention does anyway.
    this_month = Month.of(timezone.now())
    with connection.cursor() as cursor:
        for partition in partitions.partitions():
            if partition.upper is not None and partition.upper <= this_month.lower:
                cursor.execute(f"DROP TABLE {partition.table}")
    partitions.forget_known()


@pytest.fixture
def sealed_history(api, tmp_path, settings):
    """Five events of January 2024, three of February 2024 and two of today, all sealed."""
    settings.AUDITSVC_SEAL_LAG_SECONDS = 0
    assert run_import(str(old_events(tmp_path, JANUARY, 5, "jan.ndjson")))[0] == 0
    assert run_import(str(old_events(tmp_path, FEBRUARY, 3, "feb.ndjson")))[0] == 0
    for n in range(2):
        assert api.post_json("/api/v1/events", {"type": "user.login", "payload": {"today": n}}).status_code == 201
    assert seal_events()
    settings.AUDITSVC_RETENTION_DAYS = 400  # the cutoff lies well after February 2024
    return api


def verify(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("verify_events", "--workers", "1", *args, stdout=out, stderr=StringIO())
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


def test_retention_archives_checks_and_drops_the_old_months_and_verification_still_passes(sealed_history, tmp_path):
    archive_dir = tmp_path / "archives"
    january_ids = sorted(
        str(i) for i in Event.objects.filter(received_at__year=2024, received_at__month=1).values_list("id", flat=True)
    )
    out = StringIO()

    call_command("apply_retention", "--archive-dir", str(archive_dir), stdout=out)

    assert f"Retired {JANUARY.table}: 5 events" in out.getvalue()
    assert f"Retired {FEBRUARY.table}: 3 events" in out.getvalue()
    assert not {JANUARY.table, FEBRUARY.table} & {p.table for p in partitions.partitions()}
    assert Event.objects.filter(received_at__year=2024).count() == 0
    assert Event.objects.filter(type__name="user.login").count() == 2  # today's stay

    archive = archive_dir / "events-2024-01.ndjson.gz"
    manifest = json.loads((archive_dir / "events-2024-01.manifest.json").read_text())
    records = [orjson.loads(line) for line in gzip.decompress(archive.read_bytes()).splitlines()]
    assert [r["id"] for r in records] == january_ids
    assert (manifest["count"], manifest["first_id"], manifest["last_id"]) == (5, january_ids[0], january_ids[-1])
    assert manifest["sha256"] == archives.file_sha256(archive)
    sealed = {s.sequence: s.merkle_root for s in Seal.objects.all()}
    assert manifest["seals"] and all(sealed[s["sequence"]] == s["merkle_root"] for s in manifest["seals"])
    assert sum(s["entries_in_archive"] for s in manifest["seals"]) == 5
    assert RetiredPartition.objects.get(table=JANUARY.table).archive_sha256 == manifest["sha256"]

    retention_records = list(Event.objects.filter(type__name="auditsvc.retention.applied").order_by("id"))
    assert {r.source.slug for r in retention_records} == {"auditsvc"}
    assert [r.payload["partitions"][0]["table"] for r in retention_records] == [JANUARY.table, FEBRUARY.table]
    assert retention_records[0].payload["partitions"][0]["sealed_digest"] == manifest["sealed_digest"]
    assert not PendingSeal.objects.filter(event_id__in=[r.id for r in retention_records]).exists()  # sealed at once

    # Today's events were sealed with the retired ones, in the same seal: their proofs still hold.
    today = Event.objects.filter(type__name="user.login").first()
    assert today is not None
    proof = sealed_history.client.get(f"/api/v1/events/{today.id}/proof").json()
    assert all(passed for _, passed, _ in check(proof)), check(proof)

    status, report = verify()
    assert status == 0, report
    assert "8 sealed events were archived by retention and not rechecked" in report
    status, report = verify("--archive-dir", str(archive_dir))
    assert status == 0, report
    assert "8 sealed events were archived by retention; 8 rechecked from 2 archive(s)" in report


def test_an_altered_archive_is_a_finding(sealed_history, tmp_path):
    archive_dir = tmp_path / "archives"
    apply_retention(archive_dir=archive_dir)
    archive = archive_dir / "events-2024-02.ndjson.gz"
    lines = gzip.decompress(archive.read_bytes()).splitlines()
    record = orjson.loads(lines[1])
    record["actor"] = "mallory"
    lines[1] = orjson.dumps(record)
    archive.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))

    status, report = verify("--archive-dir", str(archive_dir))

    assert status == 1
    assert "archive_modified: " in report
    # Were the recorded SHA-256 rewritten too, each record would still be checked against its seal:
    partition = partitions.Partition(FEBRUARY.table, FEBRUARY.lower, FEBRUARY.upper)
    _, problems = archives.check_archive(archive, partition=partition, sha256=archives.file_sha256(archive))
    assert [(p.kind, p.event_id) for p in problems] == [("archived_event_modified", record["id"])]


def test_a_lost_archive_is_a_finding(sealed_history, tmp_path):
    archive_dir = tmp_path / "archives"
    apply_retention(archive_dir=archive_dir)
    (archive_dir / "events-2024-01.ndjson.gz").unlink()

    status, report = verify("--archive-dir", str(archive_dir))

    assert status == 1 and "archive_missing: " in report


def test_the_dry_run_changes_nothing_and_an_archive_or_its_refusal_is_required(sealed_history, tmp_path):
    out = StringIO()
    call_command("apply_retention", "--dry-run", stdout=out)

    assert f"{JANUARY.table} (2024-01)" in out.getvalue() and "Dry run: nothing changed." in out.getvalue()
    assert Event.objects.count() == 10 and not RetiredPartition.objects.exists()
    with pytest.raises(CommandError, match="--archive-dir DIR, or --no-archive"):
        call_command("apply_retention", stdout=StringIO())

    call_command("apply_retention", "--no-archive", stdout=out)

    assert RetiredPartition.objects.get(table=JANUARY.table).archive_name == ""
    assert verify()[0] == 0


def test_a_month_with_unsealed_events_is_not_retired(api, tmp_path, settings):
    assert run_import(str(old_events(tmp_path, JANUARY, 2, "jan.ndjson")))[0] == 0
    settings.AUDITSVC_RETENTION_DAYS = 400

    with pytest.raises(RetentionRefused, match="2 of its events are not sealed yet"):
        apply_retention(archive_dir=tmp_path / "archives")

    assert Event.objects.count() == 2 and JANUARY.table in {p.table for p in partitions.partitions()}


def test_importing_an_event_of_a_retired_month_is_refused(sealed_history, tmp_path):
    apply_retention(archive_dir=tmp_path / "archives")
    path = old_events(tmp_path, JANUARY, 1, "again.ndjson")

    status, _ = run_import(str(path), "--rejects", str(tmp_path / "rejects.ndjson"))

    reject = json.loads((tmp_path / "rejects.ndjson").read_text())
    assert status == 1
    assert (reject["errors"][0]["field"], reject["errors"][0]["code"]) == ("received_at", "retention_expired")
    assert JANUARY.table not in {p.table for p in partitions.partitions()}  # not made again

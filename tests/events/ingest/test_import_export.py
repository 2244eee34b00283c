"""manage.py import_events / export_events: one write path, safe re-runs, lossless round trip."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from io import StringIO
from pathlib import Path

import orjson
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from events.ingest.formats import open_input
from events.ingest.importing import Importer
from events.models import Event, IdempotencyKey, Source
from tests.database import truncate
from tests.factories import SourceFactory
from tests.paths import REPO_ROOT
from tests.processes import database_url

ROOT = REPO_ROOT

GOOD = [
    {"type": "billing.charged", "customer": "cus_1", "payload": {"amount": 5}, "idempotency_key": "k1"},
    {"type": "billing.charged", "customer": "cus_2", "actor": "alice", "occurred_at": "2026-10-01T10:00:00Z"},
    {"type": "customer.created", "customer": "cus_3", "description": "signed up"},
]
BAD = [
    '{"type": "a.b", "payload": {"x": "\\u0000"}}',  # NUL
    '{"type": "a.b", "colour": "red"}',  # unknown field
    '{"type": "a.b", "occurred_at": "yesterday"}',  # invalid timestamp
    '{"type": 42}',  # wrong type
    '{"type": "a.b", "payload": [1]}',  # payload not an object
    '{"type": "a.b", "payload": {"n": 123456789012345678}}',  # number out of range
    '{"type": "a.b",',  # malformed JSON
    "[1, 2]",  # not an object
    '{"type": "a.b", "customer": "' + "c" * 300 + '"}',  # too long
    '{"type":"a.b","payload":{"x":1,"x":2}}',  # a key twice (compact, as orjson would write it)
    '{"type": "a.b", "payload": {"n": 100000000000000000000000}}',  # beyond 64 bits: no exact float
]


def run_import(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("import_events", *args, stdout=out)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


# The importer stores from a writer thread with its own database connection, which cannot
# see a test's open transaction: these tests commit for real.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def billing(db) -> Source:
    return SourceFactory.create(slug="billing")


def numbered(numbers: range) -> list[str]:
    """NDJSON lines of distinct events, {"payload": {"n": n}} for each n."""
    return [json.dumps({"type": "a.b", "payload": {"n": n}}) for n in numbers]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_mixed_file_stores_the_good_and_rejects_the_bad_with_line_numbers(billing, tmp_path):
    lines = [json.dumps(GOOD[0]), *BAD[:5], json.dumps(GOOD[1]), *BAD[5:], json.dumps(GOOD[2])]
    path = write_lines(tmp_path / "events.ndjson", lines)

    status, out = run_import(str(path), "--source", "billing", "--rejects", str(tmp_path / "rejects.ndjson"))

    rejects = [orjson.loads(line) for line in (tmp_path / "rejects.ndjson").read_text().splitlines()]
    assert status == 1
    assert "read 14, stored 3, duplicates skipped 0, rejected 11" in out
    assert Event.objects.count() == 3
    assert [r["line"] for r in rejects] == [2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13]
    assert [r["errors"][0]["code"] for r in rejects] == [
        "null_character", "unknown_field", "invalid_datetime", "wrong_type", "wrong_type",
        "number_out_of_range", "malformed_record", "malformed_record", "too_long", "duplicate_key",
        "number_out_of_range",
    ]  # fmt: skip


def test_reimporting_a_file_is_a_no_op(billing, tmp_path):
    # Records without an idempotency key get one derived from their content and line number.
    lines = [json.dumps(e) for e in GOOD] + [json.dumps({"type": "no.key"})] * 2
    path = write_lines(tmp_path / "events.ndjson", lines)

    first = run_import(str(path), "--source", "billing")
    second = run_import(str(path), "--source", "billing")

    assert first == (0, f"{path}: read 5, stored 5, duplicates skipped 0, rejected 0\n")
    assert second == (0, f"{path}: read 5, stored 0, duplicates skipped 5, rejected 0\n")
    assert Event.objects.count() == 5


def test_a_rerun_long_after_the_dedupe_window_is_still_a_no_op(billing, tmp_path):
    # The API's keys expire after the window; an import's claims are held for good.
    lines = [json.dumps(GOOD[0]), json.dumps({"type": "no.key"})]
    path = write_lines(tmp_path / "events.ndjson", lines)
    assert run_import(str(path), "--source", "billing")[0] == 0
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(days=90))

    call_command("purge_idempotency_keys", stdout=StringIO())
    status, out = run_import(str(path), "--source", "billing")

    assert (status, IdempotencyKey.objects.count()) == (0, 2)
    assert "stored 0, duplicates skipped 2" in out
    assert Event.objects.count() == 2


def test_gzip_and_stdin(billing, tmp_path, monkeypatch):
    gz = tmp_path / "events.ndjson.gz"
    gz.write_bytes(gzip.compress(("\n".join(json.dumps(e) for e in GOOD)).encode()))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(json.dumps({"type": "from.stdin"}).encode())))

    assert run_import(str(gz), "--source", "billing")[0] == 0
    assert run_import("-", "--source", "billing", "--rejects", str(tmp_path / "r.ndjson"))[0] == 0
    assert Event.objects.count() == 4
    assert Event.objects.filter(type__name="from.stdin").exists()


def test_a_truncated_gzip_file_stores_what_it_could_read_and_says_so(billing, tmp_path):
    whole = gzip.compress(("\n".join(numbered(range(2000)))).encode())
    path = tmp_path / "cut.ndjson.gz"
    path.write_bytes(whole[: len(whole) // 2])

    with pytest.raises(CommandError, match="the input is unreadable") as failure:
        run_import(str(path), "--source", "billing", "--batch-size", "100")

    stored = int(re.search(r"stored (\d+)", str(failure.value)).group(1))  # type: ignore[union-attr]
    assert 0 < stored < 2000
    assert Event.objects.count() == stored


def test_csv_input(billing, tmp_path):
    path = tmp_path / "events.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["type", "customer", "actor", "occurred_at", "description", "payload", "idempotency_key"])
        writer.writerow(["billing.charged", "cus_1", "", "2026-10-01T10:00:00Z", "", '{"amount": 5}', "c1"])
        writer.writerow(["billing.charged", "", "bob", "", "a charge", "", "c2"])
        writer.writerow(["bad type!", "", "", "", "", "", "c3"])

    status, out = run_import(str(path), "--source", "billing")

    assert status == 1
    assert "stored 2" in out and "rejected 1" in out
    first = Event.objects.get(idempotency_key="c1")
    assert (first.payload, first.actor, first.description) == ({"amount": 5}, None, None)
    assert Event.objects.get(idempotency_key="c2").customer is None


def test_cloudevents_input(billing, tmp_path):
    event = {
        "specversion": "1.0", "id": "ce-1", "source": "billing", "type": "com.example.invoice.paid",
        "time": "2026-10-01T10:00:00Z", "subject": "cus_9", "datacontenttype": "application/json",
        "data": {"invoice": "in_1"}, "actor": "stripe-webhook",
    }  # fmt: skip
    path = write_lines(tmp_path / "ce.ndjson", [json.dumps(event), json.dumps(event)])

    status, out = run_import(str(path), "--format", "cloudevents")

    stored = Event.objects.select_related("customer", "source").get()
    assert (status, stored.idempotency_key, stored.customer.external_id, stored.actor) == (  # type: ignore[union-attr]
        0, "ce-1", "cus_9", "stripe-webhook",
    )  # fmt: skip
    assert stored.source.slug == "billing"
    assert "duplicates skipped 1" in out


def test_a_large_import_refreshes_the_planner_statistics(billing, tmp_path, monkeypatch):
    monkeypatch.setattr("events.ingest.importing.ANALYZE_MIN_EVENTS", 20)
    large = write_lines(tmp_path / "large.ndjson", numbered(range(30)))
    small = write_lines(tmp_path / "small.ndjson", numbered(range(100, 105)))

    def planner_rows() -> float:
        with connection.cursor() as cursor:
            cursor.execute("SELECT reltuples FROM pg_class WHERE oid = 'events_event'::regclass")
            return float(cursor.fetchone()[0])

    assert run_import(str(large), "--source", "billing", "--batch-size", "7")[0] == 0
    assert planner_rows() == 30
    assert run_import(str(small), "--source", "billing")[0] == 0  # 5 more: left to autovacuum
    assert (planner_rows(), Event.objects.count()) == (30, 35)


def test_records_may_name_an_existing_source_only(billing, tmp_path):
    path = write_lines(tmp_path / "e.ndjson", [json.dumps({"type": "a.b", "source": "billing"}),
                                               json.dumps({"type": "a.b", "source": "nobody"})])  # fmt: skip

    status, _ = run_import(str(path))

    assert status == 1
    assert list(Event.objects.values_list("source__slug", flat=True)) == ["billing"]


def test_an_interrupted_import_resumes_without_duplicates(billing, tmp_path):
    path = write_lines(tmp_path / "e.ndjson", numbered(range(25)))
    seen = {"records": 0}

    def stop_after_ten() -> bool:
        seen["records"] += 1
        return seen["records"] >= 10

    with open_input(str(path)) as stream:
        stats = Importer(default_source=billing, batch_size=4, on_reject=print).run(
            stream, "ndjson", stop=stop_after_ten, progress=lambda n: None
        )
    assert (stats.interrupted, stats.stored) == (True, 10)
    status, out = run_import(str(path), "--source", "billing", "--batch-size", "4")

    assert status == 0
    assert "stored 15, duplicates skipped 10" in out
    assert sorted(Event.objects.values_list("payload__n", flat=True)) == list(range(25))


def test_export_command_matches_the_api(api, tmp_path):
    for n in range(30):
        api.post_json("/api/v1/events", {"type": "billing.charged" if n % 2 else "a.b", "payload": {"n": n}})
    output = tmp_path / "out.ndjson"

    call_command("export_events", "--type", "billing.charged", "--output", str(output), stderr=StringIO())

    exported = [orjson.loads(line)["id"] for line in output.read_text().splitlines()]
    listed = [e["id"] for e in api.client.get("/api/v1/events", {"type": "billing.charged"}).json()["results"]]
    assert exported == listed
    assert len(exported) == 15


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("export_format", ["ndjson", "csv"])
def test_export_then_import_into_an_empty_database_reproduces_the_events(make_client, tmp_path, export_format):
    api = make_client()
    api.post_json("/api/v1/events", {"events": [
        {"type": "billing.charged", "customer": "cus_1", "actor": "a", "description": "d", "payload": {"x": [1, 2.5]}},
        {"type": "customer.created", "customer": "cus_2", "occurred_at": "2026-01-01T00:00:00.123456+02:00"},
        {"type": "heartbeat", "idempotency_key": "hb-1", "payload": {"nested": {"deep": True, "none": None}}},
    ]})  # fmt: skip
    columns = ["id", "hash", "occurred_at", "received_at", "payload", "actor", "description", "type__name",
               "source__slug", "customer__external_id"]  # fmt: skip
    before = sorted(Event.objects.values_list(*columns))
    output = tmp_path / f"out.{export_format}"
    call_command("export_events", "--format", export_format, "--output", str(output), stderr=StringIO())
    truncate("events_event", "events_pendingseal", "events_idempotencykey")  # an empty event store

    status, out = run_import(str(output))

    assert (status, Event.objects.count()) == (0, 3), out
    assert sorted(Event.objects.values_list(*columns)) == before
    assert run_import(str(output))[1].endswith("stored 0, duplicates skipped 3, rejected 0\n")


# --- the command as a process: Ctrl-C and failing workers --------------------------------


class _ImportProcess:
    """import_events on a file of `total` distinct records, as its own process (for real signals)."""

    def __init__(self, tmp_path: Path, *, total: int, batch_size: int) -> None:
        path = write_lines(tmp_path / "e.ndjson", numbered(range(total)))
        self.command = [sys.executable, "manage.py", "import_events", str(path), "--source", "billing",
                        "--batch-size", str(batch_size)]  # fmt: skip
        self.environment = {**os.environ, "DATABASE_URL": database_url()}

    def interrupt(self, *, signals: int) -> subprocess.CompletedProcess[str]:
        """Start it, send SIGINT `signals` times once events are being stored, wait for its end."""
        process = subprocess.Popen(self.command, env=self.environment, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
        deadline = time.monotonic() + 60
        while not Event.objects.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for n in range(signals):
            if n:
                time.sleep(0.3)  # the first is handled (signals do not queue), the import still busy
            process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        return subprocess.CompletedProcess(self.command, process.returncode, out, err)

    def rerun(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command, env=self.environment, capture_output=True, text=True, cwd=ROOT, check=False)


def test_ctrl_c_stops_after_storing_what_was_read_and_a_rerun_completes(billing, tmp_path):
    total = 60_000
    run = _ImportProcess(tmp_path, total=total, batch_size=500)

    stopped = run.interrupt(signals=1)

    stored = int(re.search(r"stored (\d+)", stopped.stdout).group(1))  # type: ignore[union-attr]
    assert stopped.returncode == 1, stopped.stdout
    assert "Stopped by Ctrl-C" in stopped.stdout and "interrupted after line" in stopped.stdout
    assert 0 < stored < total
    assert Event.objects.count() == stored  # no half-stored batch, nothing unreported

    rerun = run.rerun()

    assert rerun.returncode == 0, rerun.stderr
    assert f"stored {total - stored}, duplicates skipped {stored}, rejected 0" in rerun.stdout
    assert Event.objects.count() == total
    assert Event.objects.values("payload__n").distinct().count() == total


def test_a_worker_error_stops_the_import_with_a_message_instead_of_hanging(billing, tmp_path, monkeypatch):
    def broken(**kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("events.ingest.write.ingest_events", broken)  # inherited by the forked workers
    path = write_lines(tmp_path / "e.ndjson", numbered(range(50)))

    with pytest.raises(CommandError, match="disk on fire") as failure:
        call_command("import_events", str(path), "--source", "billing", "--batch-size", "5", stdout=StringIO())

    # It stops reading at the first failure, and says how far it got.
    assert re.search(r"RuntimeError: disk on fire\nSo far: read \d+, stored 0,", str(failure.value))
    assert not Event.objects.exists()


def test_a_worker_that_dies_is_reported(billing, tmp_path, monkeypatch):
    def killed(**kwargs: object) -> None:
        os._exit(137)  # as the kernel's OOM killer would end it: no goodbye

    monkeypatch.setattr("events.ingest.write.ingest_events", killed)
    path = write_lines(tmp_path / "e.ndjson", [json.dumps({"type": "a.b"})] * 20)

    with pytest.raises(CommandError, match="died unexpectedly"):
        call_command("import_events", str(path), "--source", "billing", "--batch-size", "5", stdout=StringIO())


def test_a_second_ctrl_c_aborts_at_once_and_a_rerun_still_stores_everything_once(billing, tmp_path):
    total = 60_000
    run = _ImportProcess(tmp_path, total=total, batch_size=5000)  # ~2 s of batches in flight

    aborted = run.interrupt(signals=2)

    assert aborted.returncode == 1
    assert "Ctrl-C again to abort now" in aborted.stderr and "Aborted by a second Ctrl-C" in aborted.stderr
    assert Event.objects.count() < total

    rerun = run.rerun()

    assert rerun.returncode == 0, rerun.stderr
    assert Event.objects.count() == total
    assert Event.objects.values("payload__n").distinct().count() == total


def test_an_export_as_cloudevents_reads_back_through_the_cloudevents_import(billing, tmp_path, api):
    stored = api.post_json("/api/v1/events", {"events": [
        {"type": "invoice.paid", "customer": "cus_9", "actor": "stripe", "idempotency_key": "k-1",
         "payload": {"invoice": "in_1", "note": None, "lines": [{"sku": "a"}]}},
        {"type": "invoice.sent", "payload": {}},
    ]}).json()["events"]  # fmt: skip

    response = api.client.get("/api/v1/events/export", {"format": "cloudevents"})
    lines = b"".join(response.streaming_content).decode().splitlines()
    documents = sorted((json.loads(line) for line in lines), key=lambda d: d["type"])

    assert response["Content-Type"] == "application/x-ndjson" and len(documents) == 2
    paid, sent = documents
    assert paid == {
        "specversion": "1.0", "id": "k-1", "source": "billing", "type": "invoice.paid",
        "time": stored[0]["occurred_at"], "subject": "cus_9", "datacontenttype": "application/json",
        "actor": "stripe", "auditsvcid": stored[0]["id"], "auditsvcreceivedat": stored[0]["received_at"],
        "auditsvchash": stored[0]["hash"], "auditsvcsource": "billing",
        "data": {"invoice": "in_1", "note": None, "lines": [{"sku": "a"}]},
    }  # fmt: skip
    assert sent["id"] == stored[1]["id"] and "subject" not in sent and "actor" not in sent  # no nulls
    path = write_lines(tmp_path / "ce.ndjson", lines)
    status, out = run_import(str(path), "--format", "cloudevents")
    assert status == 0 and "duplicates skipped 2" in out  # both are the same events again, by their ids
    assert Event.objects.count() == 2

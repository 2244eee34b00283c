"""Bulk import and export benchmark (issue targets: import ≥ 50 % of raw COPY, RSS < 300 MB;
export ≥ 100,000 events/s, RSS < 200 MB).

    .venv/bin/python -m bench.import_export [--count 1000000]

A fresh database (as bench.ingest makes it); an NDJSON file of COUNT realistic events
(~400 bytes each, no idempotency keys: the importer derives them). Then, in the same run:

- the reference: the same COUNT rows (same derived keys, hashes, types and customers),
  formatted beforehand, COPYed in one transaction into events_event itself, so with the
  same indexes, foreign keys and constraints; then the table is emptied again;
- the older, kinder reference of bench.ingest (COPY_ROWS corpus rows into a twin of the
  table without its foreign keys), for comparison with earlier runs;
- `manage.py import_events` and `manage.py export_events`, each in its own process,
  timed from start to exit, peak RSS summed over the command and its worker processes.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg

from bench.ingest import copy_reference, fresh_database, timed_copy
from bench.report import publish

ROOT = Path(__file__).resolve().parent.parent


def same_rows_copy_rate(url: str, path: Path, count: int) -> float:
    """Events/s of a raw COPY of path's events, as the importer would store them, into events_event."""
    from events.ids import uuid7  # noqa: PLC0415
    from events.ingest.import_identity import DerivedKeys  # noqa: PLC0415
    from events.integrity.hashing import event_hash  # noqa: PLC0415

    received = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as db:
        events = [orjson.loads(line) for line in path.open("rb")]
        customers = sorted({e["customer"] for e in events if e.get("customer")})
        db.execute("INSERT INTO customers_customer (external_id, email, display_name) "
                   "SELECT unnest(%s::text[]), '', ''", [customers])  # fmt: skip
        customer_ids: dict[str, int] = dict(db.execute("SELECT external_id, id FROM customers_customer").fetchall())
        type_ids: dict[str, int] = dict(db.execute("SELECT name, id FROM events_eventtype").fetchall())
        source_id = db.execute("SELECT id FROM events_source WHERE slug = 'bench'").fetchone()[0]  # type: ignore[index]
        rows = []
        keys = DerivedKeys()
        for number, (event, raw) in enumerate(zip(events, path.open("rb"), strict=True), start=1):
            event_id = uuid7()
            occurred = datetime.fromisoformat(event["occurred_at"])
            digest = event_hash(event_id=event_id, type_name=event["type"], source_slug="bench",
                                customer=event.get("customer"), actor=event.get("actor"), occurred_at=occurred,
                                received_at=received, description=event.get("description"),
                                payload=event["payload"])  # fmt: skip
            key = keys.next_key((number, raw.strip())).legacy_key
            customer = customer_ids[event["customer"]] if event.get("customer") else None
            rows.append((event_id, type_ids[event["type"]], source_id, customer, event.get("actor"), occurred,
                         received, event.get("description"), orjson.dumps(event["payload"]).decode(), key, digest))  # fmt: skip
        del events
        elapsed = timed_copy(db, "events_event", rows)
        with db.transaction():  # empty again, as the importer will find it (a superuser's way past the triggers)
            db.execute("SET LOCAL session_replication_role = replica")
            db.execute("TRUNCATE events_event, customers_customer CASCADE")
        db.execute("VACUUM ANALYZE")
    return count / elapsed


def measured(*command: str) -> tuple[float, float, float, str]:
    """(seconds, peak RSS MB, peak PSS MB, stdout) of a manage.py command run by bench.measured."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.measured", *command], cwd=ROOT, capture_output=True, text=True, check=False
    )
    match = re.search(
        r"MEASURED seconds=([\d.]+) peak_rss_mb=([\d.]+) peak_pss_mb=([\d.]+) status=(\d+)", result.stderr
    )
    if not match or match.group(4) != "0":
        sys.exit(f"{command[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return float(match.group(1)), float(match.group(2)), float(match.group(3)), result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--copy-rows", type=int, default=300_000)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    base = os.environ.get("DATABASE_URL", "")
    url = fresh_database()
    os.environ["DATABASE_URL"] = url
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
    subprocess.run([sys.executable, "manage.py", "create_source", "bench"], cwd=ROOT, check=True, capture_output=True)
    from bench.django_setup import setup  # noqa: PLC0415

    setup()
    from events.demo import TYPES, Corpus  # noqa: PLC0415
    from events.models import EventType  # noqa: PLC0415

    EventType.objects.bulk_create([EventType(name=name) for name in TYPES], ignore_conflicts=True)
    workdir = Path(tempfile.mkdtemp(prefix="auditsvc-import-"))
    source_file = workdir / "events.ndjson"
    corpus = Corpus(seed=11)
    with source_file.open("wb") as handle:
        for _ in range(args.count):
            handle.write(orjson.dumps(corpus.event()) + b"\n")
    size_mb = source_file.stat().st_size / 1e6
    with psycopg.connect(url, autocommit=True) as db:  # the COPY reference's customer ids
        db.execute("INSERT INTO customers_customer (external_id, email, display_name) "
                   "SELECT 'ref_' || n, '', '' FROM generate_series(1, 1000) AS n")  # fmt: skip
    same_rows_rate = same_rows_copy_rate(url, source_file, args.count)
    copy_rate = copy_reference(url, args.copy_rows)
    from events.ingest.importing import default_workers  # noqa: PLC0415

    workers = default_workers()
    import_seconds, import_rss, import_pss, import_out = measured(
        "import_events", str(source_file), "--source", "bench"
    )
    export_file = workdir / "export.ndjson"
    export_seconds, export_rss, export_pss, _ = measured("export_events", "--output", str(export_file))
    exported = sum(1 for _ in export_file.open("rb"))
    assert f"stored {args.count}" in import_out, import_out
    assert exported == args.count, exported
    import_rate, export_rate = args.count / import_seconds, exported / export_seconds
    lines = [
        f"### Import and export, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {args.count:,} events",
        "",
        f"Command: `{'DATABASE_URL=' + base + ' ' if base else ''}.venv/bin/python -m bench.import_export "
        f"--count {args.count}` (a fresh database; NDJSON file of {size_mb:,.0f} MB; each command in its own process, "
        "timed from start to exit, including Django start-up; RSS summed over the command and its workers).",
        "",
        "| measurement | events/s | ratio | peak memory, summed over processes |",
        "| --- | ---: | --- | ---: |",
        f"| reference: raw COPY of the same {args.count:,} rows into events_event | {same_rows_rate:,.0f} | 1.00 | |",
        f"| earlier reference: raw COPY of {args.copy_rows:,} corpus rows into a twin without foreign keys | "
        f"{copy_rate:,.0f} | {copy_rate / same_rows_rate:.2f} | |",
        f"| `import_events` (validate, derive keys, dedupe, hash, COPY; {workers} worker processes) | "
        f"{import_rate:,.0f} | **{import_rate / same_rows_rate:.2f}** of COPY (target ≥ 0.50); "
        f"{import_rate / copy_rate:.2f} of the earlier reference | {import_rss:.0f} MB RSS, {import_pss:.0f} MB PSS "
        "(target < 300) |",
        f"| `export_events` (NDJSON) | {export_rate:,.0f} | {export_rate / 100_000:.2f} of the 100,000 target | "
        f"{export_rss:.0f} MB RSS, {export_pss:.0f} MB PSS (target < 200) |",
    ]
    report = "\n".join(lines)
    publish(report, to_docs=not args.no_docs)


if __name__ == "__main__":
    main()

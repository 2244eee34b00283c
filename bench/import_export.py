"""Bulk import and export benchmark (issue targets: import ≥ 50 % of raw COPY, RSS < 300 MB;
export ≥ 100,000 events/s, RSS < 200 MB).

    .venv/bin/python -m bench.import_export [--count 1000000]

A fresh database (as bench.ingest makes it); an NDJSON file of COUNT realistic events
(~400 bytes each, no idempotency keys: the importer derives them); the raw COPY reference
of the same kind of rows into a twin of events_event, in the same run; then
`manage.py import_events` and `manage.py export_events`, each in its own process.
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

from bench.ingest import copy_reference, fresh_database
from bench.report import publish

ROOT = Path(__file__).resolve().parent.parent


def measured(*command: str) -> tuple[float, float, str]:
    """(seconds, peak RSS MB, stdout) of a manage.py command run by bench.measured."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.measured", *command], cwd=ROOT, capture_output=True, text=True, check=False
    )
    match = re.search(r"MEASURED seconds=([\d.]+) peak_rss_mb=([\d.]+) status=(\d+)", result.stderr)
    if not match or match.group(3) != "0":
        sys.exit(f"{command[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return float(match.group(1)), float(match.group(2)), result.stdout


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
    copy_rate = copy_reference(url, args.copy_rows)
    import_seconds, import_rss, import_out = measured("import_events", str(source_file), "--source", "bench")
    export_file = workdir / "export.ndjson"
    export_seconds, export_rss, _ = measured("export_events", "--output", str(export_file))
    exported = sum(1 for _ in export_file.open("rb"))
    assert f"stored {args.count}" in import_out, import_out
    assert exported == args.count, exported
    import_rate, export_rate = args.count / import_seconds, exported / export_seconds
    lines = [
        f"### Import and export, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {args.count:,} events",
        "",
        f"Command: `{'DATABASE_URL=' + base + ' ' if base else ''}.venv/bin/python -m bench.import_export "
        f"--count {args.count}` (a fresh database; NDJSON file of {size_mb:,.0f} MB; each command in its own process, "
        "timed from start to exit, including Django start-up).",
        "",
        "| measurement | events/s | ratio | peak RSS |",
        "| --- | ---: | --- | ---: |",
        f"| raw COPY into events_event's twin ({args.copy_rows:,} rows, reference) | {copy_rate:,.0f} | 1.00 | |",
        f"| `import_events` (validate, derive keys, dedupe, hash, COPY) | {import_rate:,.0f} | "
        f"{import_rate / copy_rate:.2f} of COPY; target ≥ 0.50 | {import_rss:.0f} MB (target < 300) |",
        f"| `export_events` (NDJSON) | {export_rate:,.0f} | target ≥ 100,000 | {export_rss:.0f} MB (target < 200) |",
    ]
    report = "\n".join(lines)
    publish(report, to_docs=not args.no_docs)


if __name__ == "__main__":
    main()

"""Retention benchmark: retire the oldest month of a loaded database, against an export of it.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/auditsvc_bench .venv/bin/python -m bench.retention

Destructive: seals every pending event, then archives and drops the oldest month's partition
(the archive goes to a temporary directory). Run it after the read benchmarks, on data from
`bench.load_events` (twelve monthly partitions). The reference is an NDJSON.gz export of the
same month, measured in the same run: retiring is that export plus reading the archive back
against the seals plus the drop, so the ratio shows what the checks cost.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.django_setup import setup
from bench.report import publish


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    setup()
    from django.conf import settings  # noqa: PLC0415
    from django.db import connection  # noqa: PLC0415

    from events.export import gzip_stream, stream_events  # noqa: PLC0415
    from events.integrity.sealing import seal_events  # noqa: PLC0415
    from events.lifecycle import archives  # noqa: PLC0415
    from events.lifecycle.partitions import partition_states  # noqa: PLC0415
    from events.lifecycle.retention import apply_retention  # noqa: PLC0415
    from events.models import Event  # noqa: PLC0415

    started = time.perf_counter()
    sealed = 0
    while made := seal_events(lag_seconds=0):
        sealed += sum(seal.event_count for seal in made)
    seal_seconds = time.perf_counter() - started

    oldest = next(s for s in partition_states(exact=True) if s.partition.month is not None and s.rows)
    month = oldest.partition.month
    assert month is not None
    count, table_bytes = oldest.rows, oldest.bytes
    # Retention of whole days that puts the cutoff just after this month, before the next.
    settings.AUDITSVC_RETENTION_DAYS = math.floor((datetime.now(UTC) - month.next().start).total_seconds() / 86400)

    with tempfile.TemporaryDirectory() as directory:
        events = Event.objects.filter(id__gte=month.lower, id__lt=month.upper).order_by("id")
        started = time.perf_counter()
        with (Path(directory) / "reference.ndjson.gz").open("wb") as out:
            for chunk in gzip_stream(stream_events(events, export_format="ndjson")):
                out.write(chunk)
        export_seconds = time.perf_counter() - started

        archive_dir = Path(directory) / "archives"
        started = time.perf_counter()
        report = apply_retention(archive_dir=archive_dir)
        retire_seconds = time.perf_counter() - started
        assert [r.partition.month for r in report.retired] == [month], report.retired
        archive = archive_dir / f"events-{month}.ndjson.gz"
        archive_bytes = archive.stat().st_size
        started = time.perf_counter()
        checked, problems = archives.check_archive(
            archive, partition=report.retired[0].partition, sha256=archives.file_sha256(archive)
        )
        check_seconds = time.perf_counter() - started
        assert checked == count and not problems, (checked, problems[:3])

    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        version = cursor.fetchone()[0].split(" on ")[0]
    lines = [
        f"### Retention, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, the oldest month ({month}) of a loaded database",
        "",
        "Command: `DATABASE_URL=postgres://postgres@127.0.0.1:5432/auditsvc_bench .venv/bin/python -m "
        f"bench.retention` (data: `bench.load_events --count 10000000`, twelve monthly partitions); {version}.",
        "",
        "| step | seconds | events/s | |",
        "| --- | ---: | ---: | --- |",
        f"| seal every pending event first | {seal_seconds:.1f} | {sealed / seal_seconds:,.0f} | {sealed:,} events |"
        if sealed
        else "| seal every pending event first | - | - | none pending |",
        f"| reference: export the month as NDJSON.gz | {export_seconds:.1f} | {count / export_seconds:,.0f} | |",
        f"| apply_retention: archive, read back, record, detach, drop | {retire_seconds:.1f} | "
        f"{count / retire_seconds:,.0f} | {export_seconds / retire_seconds:.2f} of the export's rate |",
        f"| the read-back check alone (verify_events --archive-dir, per archive) | {check_seconds:.1f} | "
        f"{count / check_seconds:,.0f} | |",
        "",
        f"{count:,} events: {table_bytes / count:,.0f} bytes each in the partition with its indexes, "
        f"{archive_bytes / count:,.0f} in the archive ({table_bytes / archive_bytes:.1f}× smaller).",
    ]
    publish("\n".join(lines), to_docs=not args.no_docs)


if __name__ == "__main__":
    main()

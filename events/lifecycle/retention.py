"""Retention: partitions wholly older than AUDITSVC_RETENTION_DAYS are archived, checked, dropped.

For each such partition, oldest first: refuse it while any of its events waits for a seal
(the seals are what proves the archive later); write its events to an archive and a manifest
(count, first and last id, the archive's SHA-256, the seals that cover it with their roots);
read the archive back against the seal entries; then, in one transaction, record the
partition as retired, detach and drop it. Every run that drops something is itself an
audit event, `auditsvc.retention.applied`, stored through the one write path.

Seals and seal entries stay: they are small, and they are what lets verify_events prove an
archive, and the chain, long after the events are gone.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from events.access_log import store_service_event
from events.integrity.hashing import format_time
from events.lifecycle import archives
from events.lifecycle.partitions import Partition, forget_known, partitions, uuid7_floor
from events.models import RetiredPartition, Seal


class RetentionRefused(RuntimeError):
    """A partition cannot be retired yet (unsealed events, an archive that does not read back)."""


@dataclass
class Retired:
    partition: Partition
    events: int
    archive: str | None  # the archive's file name; None with --no-archive
    manifest: str | None


@dataclass
class RetentionReport:
    cutoff: datetime | None
    due: list[Partition] = field(default_factory=list)
    retired: list[Retired] = field(default_factory=list)


def retention_cutoff(now: datetime | None = None) -> datetime | None:
    days = settings.AUDITSVC_RETENTION_DAYS
    return None if days is None else (now or timezone.now()) - timedelta(days=days)


def due_partitions(cutoff: datetime) -> list[Partition]:
    """Partitions whose every possible id was received before cutoff, oldest first."""
    floor = uuid7_floor(cutoff)
    return [p for p in partitions() if p.upper is not None and p.upper <= floor]


def apply_retention(
    *,
    archive_dir: Path | None,
    dry_run: bool = False,
    now: datetime | None = None,
    progress: Callable[[int], object] | None = None,
) -> RetentionReport:
    """Retire every partition beyond retention (archive_dir None: drop without an archive)."""
    cutoff = retention_cutoff(now)
    report = RetentionReport(cutoff)
    if cutoff is None:
        return report
    report.due = due_partitions(cutoff)
    if dry_run:
        return report
    if archive_dir is not None:
        archive_dir.mkdir(parents=True, exist_ok=True)
    try:
        for partition in report.due:
            report.retired.append(retire(partition, archive_dir, progress=progress))
    finally:  # a partition refused midway: what was retired before it is recorded all the same
        if report.retired:
            _record_run(report, archive_dir)
    return report


def retire(
    partition: Partition, archive_dir: Path | None, *, progress: Callable[[int], object] | None = None
) -> Retired:
    low, high = partition.id_range()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM events_pendingseal WHERE event_id >= %s AND event_id < %s", [low, high])
        (unsealed,) = cursor.fetchone()
        if unsealed:
            raise RetentionRefused(
                f"{partition.table}: {unsealed} of its events are not sealed yet (run manage.py seal_events first)."
            )
        table = connection.ops.quote_name(partition.table)
        cursor.execute(f"SELECT count(*), min(id::text), max(id::text) FROM {table}")  # noqa: S608 - a catalog name
        count, first_id, last_id = cursor.fetchone()
    manifest: dict[str, Any] = {
        "partition": partition.table,
        "months": partition.span,
        "lower_id": str(partition.lower) if partition.lower else None,
        "upper_id": str(partition.upper) if partition.upper else None,
        "count": count,
        "first_id": first_id,
        "last_id": last_id,
        "seals": _covering_seals(low, high),
        "retired_at": format_time(timezone.now()),
    }
    archive = manifest_name = None
    if archive_dir is not None:
        written = archives.write_archive(partition, archive_dir)
        checked, problems = archives.check_archive(
            archive_dir / written.name, partition=partition, sha256=written.sha256, progress=progress
        )
        if problems or checked != count:
            what = problems[0].detail if problems else f"{checked} of {count} events read back"
            raise RetentionRefused(f"{partition.table}: the archive does not read back ({what}); nothing dropped.")
        manifest |= {"archive": written.name, "sha256": written.sha256, "bytes": written.bytes}
        archive = written.name
        manifest_name = f"{archives.archive_name(partition)}.manifest.json"
        archives.write_manifest(archive_dir, manifest_name, manifest)
    with transaction.atomic(), connection.cursor() as cursor:
        RetiredPartition.objects.create(
            table=partition.table, lower_id=partition.lower, upper_id=partition.upper, retired_at=timezone.now(),
            event_count=count, first_event_id=first_id, last_event_id=last_id, archive_name=archive or "",
            archive_sha256=manifest.get("sha256", ""), manifest=manifest,
        )  # fmt: skip
        cursor.execute(f"ALTER TABLE events_event DETACH PARTITION {table}")
        cursor.execute(f"DROP TABLE {table}")
    forget_known()
    return Retired(partition, count, archive, manifest_name)


def _covering_seals(low: Any, high: Any) -> list[dict[str, Any]]:
    """The seals with entries in [low, high), with their roots and how many of those entries."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT seal_id, count(*) FROM events_sealentry WHERE event_id >= %s AND event_id < %s"
            " GROUP BY seal_id ORDER BY seal_id",
            [low, high],
        )
        counts = dict(cursor.fetchall())
    seals = Seal.objects.filter(sequence__in=list(counts)).order_by("sequence")
    return [
        {
            "sequence": seal.sequence,
            "merkle_root": seal.merkle_root,
            "hash": seal.hash,
            "event_count": seal.event_count,
            "entries_in_archive": counts[seal.sequence],
            "signature": seal.signature,
            "key_id": seal.key_id,
        }
        for seal in seals
    ]


def _record_run(report: RetentionReport, archive_dir: Path | None) -> None:
    assert report.cutoff is not None
    store_service_event(
        type="auditsvc.retention.applied",
        actor=f"manage.py apply_retention ({getpass.getuser()})",
        description=f"Retention retired {len(report.retired)} partition(s) received before the cutoff.",
        payload={
            "retention_days": settings.AUDITSVC_RETENTION_DAYS,
            "cutoff": format_time(report.cutoff),
            "archived": archive_dir is not None,
            "archive_dir": str(archive_dir) if archive_dir is not None else None,
            "partitions": [
                {"table": r.partition.table, "months": r.partition.span, "events": r.events, "archive": r.archive}
                for r in report.retired
            ],
        },
        max_chars=10_000,
    )

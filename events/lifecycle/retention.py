"""Retention: partitions wholly older than AUDITSVC_RETENTION_DAYS are archived, checked, dropped.

For each such partition, oldest first:
1. close it to writes (a CHECK (false) NOT VALID constraint, committed: an import of an old
   event that commits after this gets retention_expired, one that committed before is in it);
2. refuse it while any of its events waits for a seal, or its rows differ from its seal entries;
3. write its events to an archive and read the archive back against the seal entries;
4. write the manifest (count, first and last id, the digest of the sealed "id:hash" lines, the
   archive's SHA-256, the covering seals with their roots), file and directory fsynced;
5. in one transaction: find the partition still holding exactly that, record it as retired,
   store the auditsvc.retention.applied event that carries the same figures, detach and drop.
The record is sealed right after where this process may seal. Verification accepts a sealed
event's absence only inside a retirement whose sealed record agrees with the seal entries.

Seals and seal entries stay: they are small, and they are what lets verify_events prove an
archive, and the chain, long after the events are gone.
"""

from __future__ import annotations

import contextlib
import getpass
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError, connection, transaction
from django.utils import timezone
from psycopg import errors
from redis.exceptions import RedisClusterException

from events.ingest import stream
from events.integrity.hashing import format_time
from events.integrity.sealing import seal_events
from events.lifecycle import archives, partitions
from events.lifecycle.partitions import Partition, instant_of_bound, uuid7_floor
from events.models import RETENTION_TYPE, RetiredPartition, Seal
from events.service_events import store_service_event


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
    return [p for p in partitions.partitions() if p.upper is not None and p.upper <= floor]


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
    if report.due:
        _refuse_while_the_stream_holds_their_events(report.due)
    if archive_dir is not None:
        archive_dir.mkdir(parents=True, exist_ok=True)
    try:
        for partition in report.due:
            report.retired.append(retire(partition, archive_dir, cutoff=cutoff, progress=progress))
    finally:
        if report.retired:
            _seal_the_records()
    return report


def _refuse_while_the_stream_holds_their_events(due: list[Partition]) -> None:
    """A 202-acknowledged entry waiting in the stream is an event of the month it was received
    in: retiring that month now would make the drainer dead-letter it (retention_expired)."""
    if not settings.AUDITSVC_STREAM_URL:
        return
    try:
        lag = stream.total_lag(stream.shard_states(stream.shards_to_drain()))
    except (redis.RedisError, RedisClusterException) as exc:
        raise RetentionRefused(
            f"the stream's Redis cannot be checked for events still to drain ({exc}); nothing retired."
        ) from exc
    newest_due = max(instant_of_bound(p.upper) for p in due if p.upper is not None)
    oldest_waiting = timezone.now() - timedelta(seconds=lag.oldest_seconds)
    if lag.entries and oldest_waiting < newest_due + _ENTRY_CLOCK_SLACK:
        raise RetentionRefused(
            f"{lag.entries} accepted events still wait in the stream, the oldest since {format_time(oldest_waiting)}, "
            f"within a month due for retirement: run the drainer (manage.py drain_events --once), then retention "
            "again; nothing retired."
        )


_ENTRY_CLOCK_SLACK = timedelta(minutes=1)  # an entry's id is its XADD time, just after its receipt


def retire(
    partition: Partition,
    archive_dir: Path | None,
    *,
    cutoff: datetime,
    progress: Callable[[int], object] | None = None,
) -> Retired:
    """Close the partition to writes, archive and check it, then record, detach and drop it in
    one transaction that finds in it exactly what the manifest says."""
    partitions.refuse_writes(partition)
    contents = closed_contents(partition)
    low, high = partition.id_range()
    manifest: dict[str, Any] = {
        "partition": partition.table,
        "months": partition.span,
        "lower_id": str(partition.lower) if partition.lower else None,
        "upper_id": str(partition.upper) if partition.upper else None,
        "count": contents.count,
        "first_id": contents.first_id,
        "last_id": contents.last_id,
        "sealed_digest": contents.digest,
        "seals": _covering_seals(low, high),
        "retired_at": format_time(timezone.now()),
    }
    if archive_dir is not None:
        manifest |= _archive(partition, archive_dir, contents, progress)
    drop_retired(partition, contents=contents, manifest=manifest, cutoff=cutoff, archive_dir=archive_dir)
    return Retired(partition, contents.count, manifest.get("archive"), manifest.get("manifest"))


def closed_contents(partition: Partition) -> archives.RangeContents:
    """What a partition closed to writes holds, once every event of it is sealed as stored."""
    low, high = partition.id_range()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM events_pendingseal WHERE event_id >= %s AND event_id < %s", [low, high])
        (unsealed,) = cursor.fetchone()
    if unsealed:
        raise RetentionRefused(
            f"{partition.table}: {unsealed} of its events are not sealed yet (run manage.py seal_events first; "
            "the month takes no new events meanwhile)."
        )
    stored = archives.stored_contents(partition)
    if stored != archives.sealed_contents(low, high):
        raise RetentionRefused(
            f"{partition.table}: its events are not the ones its seals hold (run manage.py verify_events); "
            "nothing dropped."
        )
    return stored


def _archive(
    partition: Partition,
    archive_dir: Path,
    contents: archives.RangeContents,
    progress: Callable[[int], object] | None,
) -> dict[str, Any]:
    written = archives.write_archive(partition, archive_dir)
    checked, problems = archives.check_archive(
        archive_dir / written.name, partition=partition, sha256=written.sha256, progress=progress
    )
    if problems or checked != contents.count:
        what = problems[0].detail if problems else f"{checked} of {contents.count} events read back"
        raise RetentionRefused(f"{partition.table}: the archive does not read back ({what}); nothing dropped.")
    return {
        "archive": written.name,
        "sha256": written.sha256,
        "bytes": written.bytes,
        "manifest": f"{archives.archive_name(partition)}.manifest.json",
    }


def drop_retired(
    partition: Partition,
    *,
    contents: archives.RangeContents,
    manifest: dict[str, Any],
    cutoff: datetime,
    archive_dir: Path | None,
) -> None:
    """Record the retirement in the chain (the sealed auditsvc.retention.applied event that
    verification requires), detach and drop the partition, in one transaction; refused when the
    partition no longer holds what was archived. The manifest is on disk before anything goes."""
    if archive_dir is not None:
        archives.write_manifest(archive_dir, manifest["manifest"], manifest)
    table = connection.ops.quote_name(partition.table)
    for attempt in range(_DROP_ATTEMPTS):
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '30s'")
                # The partition takes no writes (its CHECK); SHARE keeps a superuser's out too.
                cursor.execute(f"LOCK TABLE {table} IN SHARE MODE")
                if archives.stored_contents(partition) != contents:
                    raise RetentionRefused(
                        f"{partition.table}: its events changed after they were archived; nothing dropped."
                    )
                RetiredPartition.objects.create(
                    table=partition.table, lower_id=partition.lower, upper_id=partition.upper,
                    retired_at=timezone.now(), event_count=contents.count, first_event_id=contents.first_id,
                    last_event_id=contents.last_id, archive_name=manifest.get("archive", ""),
                    archive_sha256=manifest.get("sha256", ""), manifest=manifest,
                )  # fmt: skip
                _record(partition, contents, manifest, cutoff=cutoff, archive_dir=archive_dir)
                cursor.execute(f"ALTER TABLE events_event DETACH PARTITION {table}")
                cursor.execute(f"DROP TABLE {table}")
            break
        except OperationalError as exc:
            # A writer that queued on the partition while holding events_event: one of us is
            # chosen as the deadlock's victim. Nothing was dropped; try again.
            if attempt + 1 == _DROP_ATTEMPTS or not isinstance(exc.__cause__, _RETRIED):
                raise
    partitions.forget_known()


_DROP_ATTEMPTS = 3
_RETRIED = (errors.DeadlockDetected, errors.LockNotAvailable)


def _record(
    partition: Partition,
    contents: archives.RangeContents,
    manifest: dict[str, Any],
    *,
    cutoff: datetime,
    archive_dir: Path | None,
) -> None:
    """The retirement as an event of the chain: once sealed, it is what excuses the range's
    sealed events from being in the table (verification), with their count and digest."""
    store_service_event(
        type=RETENTION_TYPE,
        actor=f"manage.py apply_retention ({getpass.getuser()})",
        description=f"Retention retired {partition.table} ({contents.count} events received in {partition.span}).",
        payload={
            "retention_days": settings.AUDITSVC_RETENTION_DAYS,
            "cutoff": format_time(cutoff),
            "archived": archive_dir is not None,
            "archive_dir": str(archive_dir) if archive_dir is not None else None,
            "partitions": [
                {
                    "table": partition.table,
                    "months": partition.span,
                    "lower_id": manifest["lower_id"],
                    "upper_id": manifest["upper_id"],
                    "events": contents.count,
                    "first_id": contents.first_id,
                    "last_id": contents.last_id,
                    "sealed_digest": contents.digest,
                    "archive": manifest.get("archive"),
                    "archive_sha256": manifest.get("sha256"),
                }
            ],
        },
        max_chars=10_000,
    )


def _seal_the_records() -> None:
    """Seal the retirement records now where this process may seal (a development checkout, or
    one with the signing key); elsewhere the sealer takes them within its lag."""
    with contextlib.suppress(ImproperlyConfigured):
        seal_events(lag_seconds=0)


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

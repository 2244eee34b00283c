"""Archives of retired partitions: the events as NDJSON.gz (the export's format), a manifest
beside it, and the check that reads an archive back against the seals that covered it.

The check is the same at retirement (before the partition is dropped) and in verify_events
(long after): every record's hash is recomputed from its fields and must equal both its own
`hash` and the hash its seal entry holds, and the seal entries of the range must be exactly
the archive's records. The seal chain and the Merkle roots then prove the archive whole.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from django.db import connection

from events.export import gzip_stream, stream_events
from events.integrity.hashing import envelope_of_texts, recomputed_hash
from events.lifecycle.partitions import Partition
from events.models import Event


@dataclass(frozen=True)
class ArchiveFile:
    name: str
    sha256: str
    bytes: int


def archive_name(partition: Partition) -> str:
    """events-2026-01 for a month's partition; the table's own name for any other."""
    month = partition.month
    return f"events-{month}" if month is not None else partition.table.replace("events_event_", "events-")


def write_archive(partition: Partition, directory: Path) -> ArchiveFile:
    """The partition's events, in id order, to directory/<name>.ndjson.gz (written whole or not at all)."""
    name = f"{archive_name(partition)}.ndjson.gz"
    final = directory / name
    partial = directory / f"{name}.partial"
    digest = hashlib.sha256()
    size = 0
    events = _in_range(partition).order_by("id")
    with partial.open("wb") as out:
        for chunk in gzip_stream(stream_events(events, export_format="ndjson")):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    partial.replace(final)
    fsync_directory(directory)
    return ArchiveFile(name, digest.hexdigest(), size)


def write_manifest(directory: Path, name: str, manifest: dict[str, Any]) -> Path:
    path = directory / name
    partial = path.with_suffix(".partial")
    with partial.open("w") as out:
        out.write(json.dumps(manifest, indent=2) + "\n")
        out.flush()
        os.fsync(out.fileno())
    partial.replace(path)
    fsync_directory(directory)
    return path


def fsync_directory(directory: Path) -> None:
    """A rename is durable only once its directory is: retention drops the partition next."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class RangeContents:
    """What a range of events is, for retention and its verification: how many, the first and
    last id, and the SHA-256 of their "id:hash" lines in id order (one digest for the rows of a
    partition and for the seal entries of its range: equal when every event is sealed as stored)."""

    count: int
    first_id: str | None
    last_id: str | None
    digest: str


_PAGE = 50_000


def stored_contents(partition: Partition) -> RangeContents:
    """The rows of the partition's own table (it may be closed to writes, or detached)."""
    table = connection.ops.quote_name(partition.table)
    sql = f"SELECT id::text, hash FROM {table} WHERE id > %s::uuid ORDER BY id LIMIT %s"  # noqa: S608
    return _contents(sql, after=_just_below(partition.id_range()[0]))


def sealed_contents(low: uuid.UUID, high: uuid.UUID) -> RangeContents:
    """The seal entries of [low, high)."""
    sql = (
        "SELECT event_id::text, event_hash FROM events_sealentry WHERE event_id > %s::uuid AND event_id < %s"
        " ORDER BY event_id LIMIT %s"
    )
    return _contents(sql, after=_just_below(low), bounds=[high])


def _just_below(bound: uuid.UUID) -> str:
    """The page query asks for ids "> after": just below the range's inclusive lower bound."""
    return str(uuid.UUID(int=max(bound.int - 1, 0)))


def _contents(sql: str, *, after: str, bounds: Iterable[Any] = ()) -> RangeContents:
    # Keyset pages: a month can hold millions of rows, and a client-side cursor would load them all.
    digest = hashlib.sha256()
    count, first, last = 0, None, None
    with connection.cursor() as cursor:
        while True:
            cursor.execute(sql, [after, *bounds, _PAGE])
            rows = cursor.fetchall()
            for event_id, event_hash in rows:
                digest.update(f"{event_id}:{event_hash}\n".encode())
            if not rows:
                break
            count += len(rows)
            first = first or rows[0][0]
            last = after = rows[-1][0]
            if len(rows) < _PAGE:
                break
    return RangeContents(count, first, last, digest.hexdigest())


def _in_range(partition: Partition) -> Any:
    events = Event.objects.all()
    if partition.lower is not None:
        events = events.filter(id__gte=partition.lower)
    if partition.upper is not None:
        events = events.filter(id__lt=partition.upper)
    return events


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Problem:
    kind: str  # archive_missing, archive_modified, archived_event_modified, archived_event_missing, ...
    detail: str
    event_id: str | None = None


def check_archive(
    path: Path,
    *,
    partition: Partition,
    sha256: str,
    progress: Callable[[int], object] | None = None,
) -> tuple[int, list[Problem]]:
    """(records checked, problems) of the archive at path for partition's id range."""
    if not path.is_file():
        return 0, [Problem("archive_missing", f"{path} is not there")]
    if file_sha256(path) != sha256:
        return 0, [Problem("archive_modified", f"{path} does not have the SHA-256 its manifest records")]
    problems: list[Problem] = []
    records = _archived(path, problems)
    sealed = _sealed_entries(partition)
    checked = 0
    record = next(records, None)
    entry = next(sealed, None)
    while record is not None or entry is not None:
        if entry is None or (record is not None and record[0] < entry[0]):
            assert record is not None
            problems.append(Problem("archived_event_unsealed", f"archived event {record[0]} is in no seal", record[0]))
            record = next(records, None)
        elif record is None or entry[0] < record[0]:
            gone = f"sealed event {entry[0]} is in neither the database nor the archive {path.name}"
            problems.append(Problem("archived_event_missing", gone, entry[0]))
            entry = next(sealed, None)
        else:
            if record[1] != entry[1]:
                detail = f"archived event {record[0]} does not match its sealed hash"
                problems.append(Problem("archived_event_modified", detail, record[0]))
            checked += 1
            if progress and checked % 10_000 == 0:
                progress(10_000)
            record, entry = next(records, None), next(sealed, None)
    return checked, problems


def _archived(path: Path, problems: list[Problem]) -> Iterator[tuple[str, str]]:
    """(id, hash recomputed from the record's fields) per record; a record whose stated hash
    differs from its fields yields a hash that cannot match its seal."""
    with gzip.open(path, "rb") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                record = orjson.loads(line)
                fields = envelope_of_texts(
                    record["id"], record["type"], record["source"], record["customer"], record["actor"],
                    record["occurred_at"], record["received_at"], record["description"], record["payload"],
                    record.get("origin"),
                )  # fmt: skip
            except (orjson.JSONDecodeError, KeyError, TypeError):
                problems.append(Problem("archive_unreadable", f"{path.name} line {number} is not an archived event"))
                continue
            stated = record.get("hash", "")
            recomputed = recomputed_hash(fields, stated)
            yield record["id"], recomputed if recomputed == stated else f"fields:{recomputed}"


def _sealed_entries(partition: Partition) -> Iterator[tuple[str, str]]:
    """(event id, sealed hash) of every seal entry in partition's id range, in id order."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT event_id::text, event_hash FROM events_sealentry WHERE event_id >= %s AND event_id < %s"
            " ORDER BY event_id",
            list(partition.id_range()),
        )
        while rows := cursor.fetchmany(10_000):
            yield from rows

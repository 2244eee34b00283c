"""Which retirements excuse a sealed event's absence: those the chain itself records.

A row of events_retiredpartition is only an index: a database superuser can insert one. What
verification trusts is the auditsvc.retention.applied event that retention stores in the
transaction that drops the partition: its payload names the range, the event count and the
digest of the range's sealed "id:hash" lines. Once that event is sealed (and recomputes to its
sealed hash), the range's seal entries must still give that count and digest; only then are the
range's sealed events counted as archived. Anything else is a finding that names the table.

Records written before digests existed (one event per run, listing the tables and their
counts) prove the count only; docs/integrity.md says so.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from django.db import connection

from events.integrity.hashing import EVENT_COLUMNS, EVENT_JOINS, envelope_of_texts, recomputed_hash
from events.lifecycle.archives import sealed_contents
from events.lifecycle.partitions import Month, Partition
from events.models import RETENTION_TYPE, SERVICE_SOURCE, RetiredPartition


@dataclass(frozen=True)
class Retirement:
    """One partition's retirement as its record states it."""

    table: str
    low: str  # the id range [low, high), as text (UUID text sorts as the UUIDs do)
    high: str
    events: int
    digest: str | None  # None: a record from before digests
    archive_sha256: str | None
    record_id: str
    sealed: bool


@dataclass(frozen=True)
class RetirementFinding:
    kind: str
    detail: str
    event_id: str | None = None


def accepted_retirements() -> tuple[list[tuple[str, str]], list[RetirementFinding]]:
    """The id ranges whose sealed events may be absent (retired), and what is wrong."""
    rows = {row.table: row for row in RetiredPartition.objects.all()}
    findings: list[RetirementFinding] = []
    accepted: list[tuple[str, str]] = []
    recorded: set[str] = set()
    for retirement in _recorded_retirements(rows):
        recorded.add(retirement.table)
        row = rows.get(retirement.table)
        problem = _disagreement(retirement, row)
        if problem is not None:
            findings.append(RetirementFinding("retirement_mismatch", problem, retirement.record_id))
            continue
        accepted.append((retirement.low, retirement.high))
        if not retirement.sealed:
            findings.append(RetirementFinding("retirement_unsealed",
                f"the retirement of {retirement.table} is recorded by event {retirement.record_id}, which is not "
                "sealed yet: run manage.py seal_events", retirement.record_id))  # fmt: skip
    for table in rows.keys() - recorded:
        findings.append(RetirementFinding("retirement_unrecorded",
            f"events_retiredpartition names {table}, but no retention event of the chain records its "
            "retirement: its sealed events are not excused"))  # fmt: skip
    return accepted, findings


def _disagreement(retirement: Retirement, row: RetiredPartition | None) -> str | None:
    """Why the record, the seal entries of its range and the index row do not agree, or None."""
    found = sealed_contents(uuid.UUID(retirement.low), uuid.UUID(retirement.high))
    if found.count != retirement.events or (retirement.digest is not None and found.digest != retirement.digest):
        return (
            f"the retirement of {retirement.table} (event {retirement.record_id}) records {retirement.events} "
            f"sealed events, and its range's seal entries are {found.count} others or altered"
        )
    if row is None:
        return f"{retirement.table} is retired by event {retirement.record_id} but not in events_retiredpartition"
    low, high = (str(bound) for bound in Partition(row.table, row.lower_id, row.upper_id).id_range())
    sha = retirement.archive_sha256
    if (
        (low, high) != (retirement.low, retirement.high)
        or row.event_count != retirement.events
        or (sha is not None and sha != row.archive_sha256)
    ):
        return f"events_retiredpartition's row for {row.table} differs from its retirement's record"
    return None


def _recorded_retirements(rows: dict[str, RetiredPartition]) -> list[Retirement]:
    """The retirements the retention events state, from the events that recompute to their hash."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {EVENT_COLUMNS}, se.event_hash FROM events_event e {EVENT_JOINS} "
            "LEFT JOIN events_sealentry se ON se.event_id = e.id WHERE t.name = %s AND s.slug = %s ORDER BY e.id",
            [RETENTION_TYPE, SERVICE_SOURCE],
        )
        records = cursor.fetchall()
    found = []
    for *event, stored_hash, sealed_hash in records:
        if isinstance(event[8], str):  # Django's psycopg loads jsonb as text, for JSONField to parse
            event[8] = orjson.loads(event[8])
        payload = event[8] if isinstance(event[8], dict) else {}
        if recomputed_hash(envelope_of_texts(*event), stored_hash) != stored_hash:
            continue  # its own finding (event_modified): a record that is not what was sealed proves nothing
        if sealed_hash is not None and sealed_hash != stored_hash:
            continue
        for entry in payload.get("partitions") or []:
            retirement = _retirement(entry, rows, record_id=event[0], sealed=sealed_hash is not None)
            if retirement is not None:
                found.append(retirement)
    return found


def _retirement(entry: Any, rows: dict[str, RetiredPartition], *, record_id: str, sealed: bool) -> Retirement | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("table"), str):
        return None
    if not isinstance(entry.get("events"), int):
        return None
    table = entry["table"]
    if "sealed_digest" in entry:
        low = uuid.UUID(entry["lower_id"]) if entry.get("lower_id") else None
        high = uuid.UUID(entry["upper_id"]) if entry.get("upper_id") else None
        partition = Partition(table, low, high)
    else:  # a record from before digests: its table names its month, or the index row its range
        month = Month.of_table(table)
        row = rows.get(table)
        if month is not None:
            partition = Partition(table, month.lower, month.upper)
        elif row is not None:
            partition = Partition(table, row.lower_id, row.upper_id)
        else:
            return None
    low_id, high_id = partition.id_range()
    return Retirement(
        table=table, low=str(low_id), high=str(high_id), events=entry["events"], digest=entry.get("sealed_digest"),
        archive_sha256=entry.get("archive_sha256"), record_id=record_id, sealed=sealed,
    )  # fmt: skip

"""Monthly partitions of events_event, ranged on the UUIDv7 id.

A UUIDv7 begins with its millisecond timestamp, so the ids of one month of receipt form one
range: from the UUIDv7 floor of the month's first instant to that of the next month's. The
bounds are computed here and written into the DDL as constants, so the planner prunes on
any `id` bound a query carries (see id_bounds_for_received and id_floor_for_occurred).

Partitions are made ahead of time (`manage.py partitions`, daily from cron, and at every
`make run`), and on demand for an imported event whose month has none. There is never a
DEFAULT partition: a row whose month has no partition is a bug to see, not a bin to fill.
A partition installed by an older deployment (the one the migration made from the table as
it stood, events_event_legacy) may span many months; a month inside it is covered by it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction

from auditsvc.times import shifted
from events.models import RetiredPartition

PARENT = "events_event"
# The id of an event is made within milliseconds of its received_at (the write path takes
# the time, then the ids); a minute covers that with room for a slow batch of thousands.
ID_TIME_SLACK = timedelta(minutes=1)
# pg_advisory_xact_lock key: one creator of partitions at a time across every process.
_CREATE_LOCK = 0x6175_6469_7470  # "auditp"
# The CHECK (false) NOT VALID constraint retention puts on a partition before it archives it:
# from its commit on, every write into that month fails (the write path answers
# retention_expired), while the rows already there stay readable and sealable.
RETIRING_CONSTRAINT = "auditsvc_retiring"
_YEAR_10000_MILLIS = 253_402_300_800_000
LOWEST_ID, HIGHEST_ID = uuid.UUID(int=0), uuid.UUID(int=(1 << 128) - 1)
_BOUND = re.compile(r"FROM \((MINVALUE|'[0-9a-f-]{36}')\) TO \((MAXVALUE|'[0-9a-f-]{36}')\)")


@dataclass(frozen=True, order=True, slots=True)
class Month:
    year: int
    month: int

    @classmethod
    def of(cls, instant: datetime) -> Month:
        instant = instant.astimezone(UTC)
        return cls(instant.year, instant.month)

    @classmethod
    def of_id(cls, event_id: uuid.UUID) -> Month:
        millis = event_id.int >> 80
        if millis >= _YEAR_10000_MILLIS:  # not a UUIDv7 of this era (a legacy random id)
            return cls(9999, 12)
        return cls.of(datetime.fromtimestamp(millis / 1000, tz=UTC))

    @classmethod
    def of_table(cls, table: str) -> Month | None:
        """The month of a partition named as this module names them (events_event_y2026m01)."""
        match = re.fullmatch(rf"{PARENT}_y(\d{{4}})m(\d{{2}})", table)
        return cls(int(match[1]), int(match[2])) if match and 1 <= int(match[2]) <= 12 else None

    @classmethod
    def parse(cls, text: str) -> Month:
        """'2026-12' as a Month; ValueError otherwise."""
        match = re.fullmatch(r"(\d{4})-(\d{2})", text)
        if not match or not 1 <= int(match[2]) <= 12:
            raise ValueError(f"{text!r} is not a month (YYYY-MM)")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    def next(self) -> Month:
        return Month(self.year + 1, 1) if self.month == 12 else Month(self.year, self.month + 1)

    def plus(self, months: int) -> Month:
        index = self.year * 12 + self.month - 1 + months
        return Month(index // 12, index % 12 + 1)

    @property
    def lower(self) -> uuid.UUID:
        return uuid7_floor(self.start)

    @property
    def upper(self) -> uuid.UUID:
        return uuid7_floor(self.next().start)

    @property
    def table(self) -> str:
        return f"{PARENT}_y{self.year:04d}m{self.month:02d}"


_MAX_MILLIS = (1 << 48) - 1  # a UUIDv7's timestamp field: 48 bits of milliseconds


def uuid7_floor(instant: datetime) -> uuid.UUID:
    """The least UUID not below any UUIDv7 made at or after instant (millisecond precision);
    an instant before 1970 or beyond the field (year 10889) gives the first or last floor."""
    millis = int(instant.timestamp() * 1000)
    return uuid.UUID(int=min(max(0, millis), _MAX_MILLIS) << 80)


def instant_of_bound(bound: uuid.UUID) -> datetime:
    """The instant a partition bound (a uuid7_floor) stands for."""
    return datetime.fromtimestamp((bound.int >> 80) / 1000, tz=UTC)


@dataclass(frozen=True, slots=True)
class Partition:
    table: str
    lower: uuid.UUID | None  # None: MINVALUE
    upper: uuid.UUID | None  # None: MAXVALUE

    @property
    def month(self) -> Month | None:
        """The month this partition is exactly, or None (a legacy partition spanning several)."""
        if self.lower is None or self.upper is None:
            return None
        month = Month.of_id(self.lower)
        return month if (month.lower, month.upper) == (self.lower, self.upper) else None

    def id_range(self) -> tuple[uuid.UUID, uuid.UUID]:
        """[low, high): the bounds with MINVALUE and MAXVALUE as the lowest and highest UUIDs."""
        return self.lower or LOWEST_ID, self.upper or HIGHEST_ID

    def covers(self, month: Month) -> bool:
        return (self.lower is None or self.lower <= month.lower) and (self.upper is None or month.upper <= self.upper)

    def overlaps(self, month: Month) -> bool:
        return (self.lower is None or self.lower < month.upper) and (self.upper is None or month.lower < self.upper)

    @property
    def span(self) -> str:
        first = "…" if self.lower is None else str(Month.of_id(self.lower))
        if self.upper is None:
            return f"{first} to …"
        last = Month.of_id(uuid.UUID(int=self.upper.int - 1))
        return first if str(last) == first else f"{first} to {last}"


def partitions() -> list[Partition]:
    """Every partition of events_event, in id order."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
            [PARENT],
        )
        rows = cursor.fetchall()
    found = [_partition(name, bound) for name, bound in rows]
    return sorted(found, key=lambda p: p.id_range())


def _partition(table: str, bound: str) -> Partition:
    match = _BOUND.search(bound)
    if match is None:  # a DEFAULT partition, or another kind of bound: not ours
        raise RuntimeError(f"{table} has an unexpected partition bound: {bound}")
    lower, upper = (None if text.endswith("VALUE") else uuid.UUID(text.strip("'")) for text in match.groups())
    return Partition(table, lower, upper)


# Months known to have a partition (filled after commit: a rolled-back creation is not one).
_covered: set[Month] = set()


def forget_known() -> None:
    """Forget which months have partitions (tests that drop partitions call this)."""
    _covered.clear()


def months_of(ids: Iterable[uuid.UUID]) -> set[Month]:
    # One conversion per distinct millisecond: a batch's fresh ids share a handful.
    return {Month.of_id(uuid.UUID(int=stamp << 80)) for stamp in {i.int >> 80 for i in ids}}


@dataclass(frozen=True, slots=True)
class Ensured:
    created: list[Month]
    retired: set[Month]  # refused: retention removed these months, and they stay removed


def ensure_partitions(months: Iterable[Month]) -> Ensured:
    """Give each month a partition unless it has one or was retired.

    Called by the write path before its transaction opens. Inside a caller's transaction
    the partition is made in it, and holds a lock on events_event until that commits.
    """
    missing = set(months) - _covered
    if not missing:
        return Ensured([], set())
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CREATE_LOCK])
        existing = partitions()
        uncovered = sorted(m for m in missing if not any(p.covers(m) for p in existing))
        retired = retired_months(uncovered) if uncovered else set()
        created = [month for month in uncovered if month not in retired]
        for month in created:
            _create(month, existing)
        transaction.on_commit(lambda: _covered.update(missing - retired))
    return Ensured(created, retired)


def retired_months(months: Iterable[Month]) -> set[Month]:
    """Those of months that lie in a partition retention removed."""
    ranges = [Partition(r.table, r.lower_id, r.upper_id) for r in RetiredPartition.objects.all()]
    return {month for month in months if any(r.overlaps(month) for r in ranges)}


def _create(month: Month, existing: list[Partition]) -> None:
    clash = next((p for p in existing if p.overlaps(month)), None)
    if clash is not None:
        raise RuntimeError(f"{month} is partly covered by {clash.table} ({clash.span}): no partition can be made")
    # The owner's function (migration 0019) makes it: the service's role has no DDL rights.
    with connection.cursor() as cursor:
        cursor.execute("SELECT auditsvc_create_month_partition(%s, %s)", [month.year, month.month])


def refuse_writes(partition: Partition) -> None:
    """Make partition refuse every new row, for good (retention's first step); idempotent.

    Only the partition is locked, and only while the transactions already writing into it
    finish: events_event and the other months take writes throughout.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL lock_timeout = '30s'")
        if partition.table not in refusing_writes():
            cursor.execute(
                f"ALTER TABLE {connection.ops.quote_name(partition.table)} ADD CONSTRAINT"
                f" {RETIRING_CONSTRAINT} CHECK (false) NOT VALID"
            )


def refusing_writes() -> set[str]:
    """The partitions retention has closed to writes (and not dropped yet)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid"
            " JOIN pg_inherits i ON i.inhrelid = c.oid WHERE i.inhparent = %s::regclass AND k.conname = %s",
            [PARENT, RETIRING_CONSTRAINT],
        )
        return {name for (name,) in cursor.fetchall()}


def no_truncate_trigger_sql(table: str) -> str:
    quoted = connection.ops.quote_name(table)
    return (
        f"CREATE TRIGGER {connection.ops.quote_name(table + '_no_truncate')} BEFORE TRUNCATE ON {quoted}"
        " FOR EACH STATEMENT EXECUTE FUNCTION auditsvc_reject_truncate()"
    )


def ensure_ahead(ahead: int = 3, *, now: datetime | None = None) -> list[Month]:
    """Partitions for this month and the next `ahead` months; the months that got one now."""
    this_month = Month.of(now or datetime.now(UTC))
    return ensure_partitions(this_month.plus(n) for n in range(ahead + 1)).created


def id_bounds_for_received(
    after: datetime | None, before: datetime | None
) -> tuple[uuid.UUID | None, uuid.UUID | None]:
    """Id bounds implied by received_at ≥ after and received_at < before (for pruning)."""
    lower = uuid7_floor(shifted(after, -ID_TIME_SLACK)) if after is not None else None
    upper = uuid7_floor(shifted(before, ID_TIME_SLACK)) if before is not None else None
    return lower, upper


def id_floor_for_occurred(after: datetime, future_skew: timedelta) -> uuid.UUID:
    """The id bound implied by occurred_at ≥ after: an event is received at most future_skew
    before it occurs (the write path refuses anything else), so received_at ≥ after - skew."""
    return uuid7_floor(shifted(after, -(future_skew + ID_TIME_SLACK)))


@dataclass(frozen=True, slots=True)
class PartitionState:
    partition: Partition
    rows: int
    rows_exact: bool  # False: the planner's estimate (pg_class.reltuples), as of the last ANALYZE
    bytes: int  # table, indexes and TOAST
    unsealed: int  # its events still waiting for a seal (events_pendingseal)

    @property
    def sealed_share(self) -> float | None:
        return None if self.rows <= 0 else max(0.0, 1 - self.unsealed / self.rows)


def partition_states(*, exact: bool = False) -> list[PartitionState]:
    """Each partition with its rows, size and seal coverage. Counting exactly reads every
    row; otherwise only partitions never analysed (new, so small) are counted."""
    states = []
    with connection.cursor() as cursor:
        for partition in partitions():
            cursor.execute(
                "SELECT reltuples::bigint, pg_total_relation_size(oid) FROM pg_class WHERE oid = %s::regclass",
                [partition.table],
            )
            estimate, size = cursor.fetchone()
            counted = exact or estimate < 0
            low, high = partition.id_range()
            if counted:  # through events_event, pruned to the partition: the service role reads only that
                cursor.execute("SELECT count(*) FROM events_event WHERE id >= %s AND id < %s", [low, high])
                (estimate,) = cursor.fetchone()
            cursor.execute(
                "SELECT count(*) FROM events_pendingseal WHERE event_id >= %s AND event_id < %s", [low, high]
            )
            (unsealed,) = cursor.fetchone()
            states.append(PartitionState(partition, int(estimate), counted, int(size), int(unsealed)))
    return states

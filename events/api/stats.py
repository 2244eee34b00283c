"""Aggregates over events, computed by PostgreSQL: counts per time bucket, and durations."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, F, QuerySet
from django.db.models.functions import Trunc

from auditsvc.errors import FieldError, InvalidInput
from auditsvc.times import shifted
from events.models import Event, Source
from events.queries import occurred_id_floor, within_partitions

INTERVALS = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}
GROUPS = {"none": None, "type": "type__name", "source": "source__slug"}
# Without an explicit range, the most recent DEFAULT_BUCKETS buckets.
DEFAULT_BUCKETS = {"hour": 24 * 7, "day": 90, "week": 104}
MAX_BUCKETS = 2000


@dataclass(frozen=True)
class DurationStats:
    count: int
    median_seconds: float | None
    p90_seconds: float | None
    max_seconds: float | None


def count_series(
    *,
    events: QuerySet[Event],
    interval: str,
    group_by: str,
    occurred_after: datetime | None,
    occurred_before: datetime | None,
) -> dict[str, Any]:
    """Event counts per interval bucket (and per type or source) over a bounded time range."""
    if interval not in INTERVALS:
        raise InvalidInput([FieldError("interval", "invalid_choice", f"interval is one of {', '.join(INTERVALS)}.")])
    if group_by not in GROUPS:
        raise InvalidInput([FieldError("group_by", "invalid_choice", f"group_by is one of {', '.join(GROUPS)}.")])
    step = INTERVALS[interval]
    end = occurred_before or datetime.now(UTC)
    start = occurred_after or shifted(end, -step * DEFAULT_BUCKETS[interval])
    if (end - start) / step > MAX_BUCKETS:
        raise InvalidInput(
            [FieldError("occurred_after", "range_too_large", f"At most {MAX_BUCKETS} {interval} buckets per request.")]
        )
    bucketed = within_partitions(
        events.filter(occurred_at__gte=start, occurred_at__lt=end), occurred_after=start
    ).annotate(bucket=Trunc("occurred_at", interval, tzinfo=UTC))
    group_field = GROUPS[group_by]
    if group_field:
        rows = bucketed.annotate(group=F(group_field)).values("bucket", "group").annotate(count=Count("id"))
        series = [
            {"time": r["bucket"], group_by: r["group"], "count": r["count"]} for r in rows.order_by("bucket", "group")
        ]
    else:
        totals = bucketed.values("bucket").annotate(count=Count("id"))
        series = [{"time": r["bucket"], "count": r["count"]} for r in totals.order_by("bucket")]
    return {"interval": interval, "group_by": group_by, "from": start, "to": end, "series": series}


def duration_stats(
    *,
    from_type_ids: list[int],
    to_type_ids: list[int],
    occurred_after: datetime | None,
    occurred_before: datetime | None,
    source: Source | None = None,
) -> DurationStats:
    """For customers with both: time from their first from-type event to the next to-type event
    (counting only source's events when given)."""
    if not from_type_ids or not to_type_ids:
        return DurationStats(0, None, None, None)
    # Raw SQL: a LATERAL "next event" lookup and ordered-set aggregates (percentile_cont)
    # are beyond the ORM. Each lateral probe is a (customer_id, occurred_at) index range scan.
    sql = """
        WITH firsts AS (
            SELECT customer_id, min(occurred_at) AS started
            FROM events_event
            WHERE type_id = ANY(%(from_ids)s) AND customer_id IS NOT NULL
              AND occurred_at >= %(after)s AND occurred_at < %(before)s AND id >= %(id_floor)s
              AND (%(source)s::bigint IS NULL OR source_id = %(source)s)
            GROUP BY customer_id
        ), durations AS (
            SELECT extract(epoch FROM following.occurred_at - firsts.started) AS seconds
            FROM firsts
            JOIN LATERAL (
                SELECT occurred_at FROM events_event e
                WHERE e.customer_id = firsts.customer_id AND e.type_id = ANY(%(to_ids)s)
                  AND e.occurred_at >= firsts.started
                  AND (%(source)s::bigint IS NULL OR e.source_id = %(source)s)
                ORDER BY e.occurred_at LIMIT 1
            ) AS following ON true
        )
        SELECT count(*),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds),
               percentile_cont(0.9) WITHIN GROUP (ORDER BY seconds),
               max(seconds)
        FROM durations
    """
    params: dict[str, Any] = {
        "from_ids": from_type_ids,
        "to_ids": to_type_ids,
        "after": occurred_after or datetime(1970, 1, 1, tzinfo=UTC),
        "before": occurred_before or datetime(9999, 1, 1, tzinfo=UTC),
        "id_floor": occurred_id_floor(occurred_after) if occurred_after else uuid.UUID(int=0),
        "source": source.pk if source else None,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        count, median, p90, longest = cursor.fetchone()
    return DurationStats(int(count), _as_float(median), _as_float(p90), _as_float(longest))


def _as_float(value: Any) -> float | None:
    return float(value) if value is not None else None

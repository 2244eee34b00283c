"""The admin's first page: the log's health at a glance.

Every figure comes from what the service already keeps, never from a count over the events:
the hourly counts (events.ingest.type_counts), the last seal, the planner's estimate of the
events waiting for a seal when there are many, and the stream's own lag. So the page costs the
same at ten million events as at ten.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from auditsvc.counting import bounded_count
from events.ingest import stream
from events.integrity.sealing import oldest_unsealed_age_seconds
from events.models import SERVICE_SOURCE, HourlyCount, PendingSeal, Seal, Source

CHART_HOURS = 48
BUSIEST_TYPES = 10
QUIET_WINDOW_HOURS = 7 * 24  # a source's usual rhythm is read off this many hours
QUIET_FACTOR = 3  # quiet: no events for this many of its usual gaps (and more than an hour)

CHART_WIDTH, CHART_HEIGHT, CHART_TOP = 960, 160, 14  # the SVG's drawing area, in its own units


@dataclass(frozen=True)
class Bar:
    hour: datetime
    events: int
    x: float
    y: float
    width: float
    height: float
    label: str  # under the bar every six hours, else ""


@dataclass(frozen=True)
class QuietSource:
    slug: str
    last_hour: datetime | None  # the last hour it sent anything in (None: not in the window)
    usual_gap_hours: float


@dataclass(frozen=True)
class Dashboard:
    bars: list[Bar]
    chart_max: int
    events_48h: int
    busiest_types: list[tuple[str, int, int]]  # (name, id, events)
    own_events_24h: int  # the log's own: reads of it, admin changes
    last_seal: Seal | None
    waiting_for_seal: int
    waiting_is_estimate: bool
    oldest_unsealed_seconds: float | None
    stream: dict[str, Any]
    quiet_sources: list[QuietSource]
    generated_at: datetime


def dashboard(now: datetime | None = None) -> Dashboard:
    now = now or timezone.now()
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    own = Source.objects.filter(slug=SERVICE_SOURCE).values_list("pk", flat=True).first()
    counts = HourlyCount.objects.exclude(source_id=own) if own is not None else HourlyCount.objects.all()
    waiting, is_estimate = bounded_count(PendingSeal.objects.all())
    bars, chart_max = _bars(_per_hour(counts, this_hour), this_hour)
    return Dashboard(
        bars=bars,
        chart_max=chart_max,
        events_48h=sum(bar.events for bar in bars),
        busiest_types=_busiest_types(counts, this_hour - timedelta(hours=23)),
        own_events_24h=_own_events(own, this_hour - timedelta(hours=23)),
        last_seal=Seal.objects.order_by("-sequence").first(),
        waiting_for_seal=waiting,
        waiting_is_estimate=is_estimate,
        oldest_unsealed_seconds=oldest_unsealed_age_seconds(),
        stream=stream.overview(),
        quiet_sources=_quiet_sources(own, this_hour),
        generated_at=now,
    )


def _per_hour(counts: Any, this_hour: datetime) -> dict[datetime, int]:
    since = this_hour - timedelta(hours=CHART_HOURS - 1)
    rows = counts.filter(hour__gte=since).values("hour").order_by().annotate(n=Sum("events"))
    return {row["hour"]: int(row["n"]) for row in rows}


def _bars(per_hour: dict[datetime, int], this_hour: datetime) -> tuple[list[Bar], int]:
    hours = [this_hour - timedelta(hours=CHART_HOURS - 1 - n) for n in range(CHART_HOURS)]
    top = max([per_hour.get(hour, 0) for hour in hours] + [1])
    slot = CHART_WIDTH / CHART_HOURS
    bars = []
    for n, hour in enumerate(hours):
        events = per_hour.get(hour, 0)
        height = (CHART_HEIGHT - CHART_TOP) * events / top
        local = timezone.localtime(hour)
        label = f"{local:%H}:00" if local.hour % 6 == 0 else ""
        if label and local.hour == 0:
            label = f"{local:%b} {local.day}"
        bars.append(Bar(hour, events, n * slot + 1, CHART_HEIGHT - height, slot - 2, height, label))
    return bars, top


def _busiest_types(counts: Any, since: datetime) -> list[tuple[str, int, int]]:
    """[(type name, type id, events)], the most events first."""
    rows = counts.filter(hour__gte=since).values("type_id", "type__name").order_by().annotate(n=Sum("events"))
    busiest = [(row["type__name"], row["type_id"], int(row["n"])) for row in rows]
    return sorted(busiest, key=lambda row: (-row[2], row[0]))[:BUSIEST_TYPES]


def _own_events(own: int | None, since: datetime) -> int:
    if own is None:
        return 0
    total = HourlyCount.objects.filter(source_id=own, hour__gte=since).aggregate(n=Sum("events"))["n"]
    return int(total or 0)


def _quiet_sources(own: int | None, this_hour: datetime) -> list[QuietSource]:
    """Active sources that sent in the window but have not for QUIET_FACTOR of their usual gaps."""
    since = this_hour - timedelta(hours=QUIET_WINDOW_HOURS - 1)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s.slug, count(DISTINCT h.hour), max(h.hour) FROM events_source s "
            "JOIN events_hourlycount h ON h.source_id = s.id AND h.hour >= %s "
            "WHERE s.is_active AND s.id IS DISTINCT FROM %s GROUP BY s.slug",
            [since, own],
        )
        rows = cursor.fetchall()
    quiet = []
    for slug, active_hours, last_hour in rows:
        usual_gap = QUIET_WINDOW_HOURS / active_hours
        silent_hours = (this_hour - last_hour).total_seconds() / 3600
        if silent_hours > 1 and silent_hours > QUIET_FACTOR * usual_gap:
            quiet.append(QuietSource(slug, last_hour, round(usual_gap, 1)))
    return sorted(quiet, key=lambda source: source.last_hour or this_hour)

"""The admin's first page: the log's health, from the hourly counts and the seals."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import Group, User
from django.test import Client

from events import dashboard as health
from events.access_log import flush_access_log, record_read
from events.ingest import type_counts
from events.ingest.validation import parse_event
from events.ingest.write import ingest_events
from events.integrity.sealing import seal_events
from events.models import HourlyCount, Source
from tests.factories import SourceFactory

NOW = datetime(2026, 12, 1, 15, 30, tzinfo=UTC)


def send(source: Source, *types: str) -> None:
    ingest_events(source=source, items=[parse_event({"type": name}) for name in types])


@pytest.fixture
def history(db, settings, django_capture_on_commit_callbacks):
    """billing: busy now; mailer: hourly from 60 to 21 hours ago, then nothing; nightly: once
    a day, last 10 hours ago (quiet for it is normal)."""
    settings.AUDITSVC_TYPE_COUNT_FLUSH_SECONDS = 0
    billing, mailer, nightly = (SourceFactory.create(slug=slug) for slug in ("billing", "mailer", "nightly"))
    with django_capture_on_commit_callbacks(execute=True):
        for hours_ago in range(21, 61):
            with time_machine.travel(NOW - timedelta(hours=hours_ago), tick=False):
                send(mailer, "mail.sent")
        for days_ago in range(7):
            with time_machine.travel(NOW - timedelta(hours=10 + 24 * days_ago), tick=False):
                send(nightly, "report.built")
        with time_machine.travel(NOW - timedelta(hours=2), tick=False):
            send(billing, *["billing.charged"] * 5, "billing.failed")
        with time_machine.travel(NOW, tick=False):
            send(billing, *["billing.charged"] * 3, *["billing.refunded"] * 2)
    type_counts.flush()


def test_the_chart_counts_each_hour_of_the_last_48(history):
    board = health.dashboard(now=NOW)

    by_hour = {bar.hour: bar.events for bar in board.bars}
    assert len(board.bars) == 48 and board.bars[-1].hour == datetime(2026, 12, 1, 15, tzinfo=UTC)
    assert by_hour[datetime(2026, 12, 1, 15, tzinfo=UTC)] == 5
    assert by_hour[datetime(2026, 12, 1, 13, tzinfo=UTC)] == 6
    assert by_hour[datetime(2026, 11, 30, 18, tzinfo=UTC)] == 1  # mailer, 21 hours ago
    assert board.events_48h == 5 + 6 + (48 - 21) + 2  # mailer's 27 hours in the window, nightly twice
    assert board.chart_max == 6
    tallest = max(board.bars, key=lambda bar: bar.height)
    assert tallest.events == 6 and tallest.height == health.CHART_HEIGHT - health.CHART_TOP


def test_the_busiest_types_of_the_last_24_hours(history):
    names = [(name, events) for name, _, events in health.dashboard(now=NOW).busiest_types]

    # mail.sent: 21, 22 and 23 hours ago are within the 24 hours (from 16:00 yesterday)
    assert names == [("billing.charged", 8), ("mail.sent", 3), ("billing.refunded", 2), ("billing.failed", 1),
                     ("report.built", 1)]  # fmt: skip


def test_a_source_that_stopped_sending_is_quiet_and_a_nightly_one_is_not(history):
    quiet = health.dashboard(now=NOW).quiet_sources

    assert [source.slug for source in quiet] == ["mailer"]
    assert quiet[0].last_hour == datetime(2026, 11, 30, 18, tzinfo=UTC)
    assert quiet[0].usual_gap_hours == 4.2  # 168 hours / 40 hours with events


def test_seals_and_the_logs_own_events(history, settings, django_capture_on_commit_callbacks):
    settings.AUDITSVC_SEAL_LAG_SECONDS = 0
    before = health.dashboard(now=NOW)
    assert before.last_seal is None and before.waiting_for_seal == 40 + 7 + 11 and not before.waiting_is_estimate

    seal_events()
    with django_capture_on_commit_callbacks(execute=True), time_machine.travel(NOW, tick=False):
        record_read(actor="staff:x", via="admin", endpoint="/admin/", returned=1, details={})
        flush_access_log()
    type_counts.flush()
    after = health.dashboard(now=NOW)

    assert after.last_seal is not None and after.last_seal.event_count == 58 and after.waiting_for_seal == 1
    assert after.own_events_24h == 1
    assert after.events_48h == before.events_48h  # the log's own are not in the chart
    assert "auditsvc.read" not in [name for name, _, _ in after.busiest_types]


def test_rebuilding_the_counts_gives_what_ingest_kept(history):
    def counts() -> set[tuple[int, int, datetime, int]]:
        return set(HourlyCount.objects.values_list("source_id", "type_id", "hour", "events"))

    kept = counts()
    with time_machine.travel(NOW, tick=False):
        type_counts.rebuild_event_type_counts()

    assert counts() == kept and len(kept) == 40 + 7 + 4  # billing: two types in each of two hours


@pytest.fixture
def auditor(db) -> Client:
    user = User.objects.create_user("auditor", is_staff=True)
    user.groups.add(Group.objects.get(name="Auditors"))
    client = Client()
    client.force_login(user)
    return client


def test_the_admin_index_shows_the_health(auditor, history):
    with time_machine.travel(NOW, tick=False):
        response = auditor.get("/admin/")

    page = response.content.decode()
    assert response.status_code == 200
    assert len(re.findall(r'<rect class="bar"', page)) == 48
    assert 'id="busiest-types"' in page and "billing.charged" in page
    assert "mailer" in page.split('id="quiet-sources"')[1]
    assert "none yet" in page  # no seal


def test_staff_who_may_not_view_events_see_no_health(db):
    client = Client()
    client.force_login(User.objects.create_user("helpdesk", is_staff=True))

    response = client.get("/admin/")

    assert response.status_code == 200 and b"log-health" not in response.content


def test_the_index_costs_the_same_whatever_the_number_of_events(auditor, history, django_assert_max_num_queries):
    def queries() -> int:
        with django_assert_max_num_queries(50) as captured:
            assert auditor.get("/admin/").status_code == 200
        for query in captured.captured_queries:
            assert 'FROM "events_event"' not in query["sql"]  # never the events themselves
        return len(captured)

    first = queries()
    send(Source.objects.get(slug="billing"), *["billing.charged"] * 200)
    assert queries() == first

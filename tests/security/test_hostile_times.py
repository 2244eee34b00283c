"""Extreme but valid RFC 3339 times on every endpoint that takes one, and on the admin's date
filter: year 0000 to 9999, offsets to ±23:59. Each answers 200 with the right events, or a 4xx
naming the parameter; before, those at the ends of the calendar answered 500 (an OverflowError
shifting the partition bounds, or the stats' default range)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from django.contrib.auth.models import User
from django.test import Client

from auditsvc.times import EARLIEST, LATEST, parse_rfc3339, parse_rfc3339_bound, shifted
from events.lifecycle.partitions import LOWEST_ID, id_bounds_for_received, uuid7_floor

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("production_write_path")]

# Before every stored event, or after: whatever the offset, they select all events or none.
EARLY = [
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+23:59",
    "0001-01-01T23:59:59.999+23:59",
    "0001-01-01T00:00:00-23:59",
    "1970-01-01T00:00:00+23:59",
]
LATE = ["9999-12-31T23:59:59Z", "9999-12-31T23:59:59.999999999-23:59", "9999-12-31T00:00:00+23:59",
        "9999-12-31T23:59:59-00:01", "2999-01-01T00:00:00-23:59"]  # fmt: skip
LOWER, UPPER = ("occurred_after", "received_after"), ("occurred_before", "received_before")
LISTS = ["/api/v1/events", "/api/v1/customers/cus_1/events"]


@pytest.fixture
def stored(api) -> dict[str, Any]:
    response = api.post_json("/api/v1/events", {"type": "billing.charged", "customer": "cus_1"})
    assert response.status_code == 201
    event: dict[str, Any] = response.json()
    return event


def _matched(response) -> list[str]:
    assert response.status_code == 200, response.content[:300]
    if response.get("Content-Type", "").startswith("application/x-ndjson"):
        return [orjson.loads(line)["id"] for line in b"".join(response.streaming_content).splitlines()]
    return [event["id"] for event in response.json()["results"]]


@pytest.mark.parametrize("time", EARLY + LATE)
@pytest.mark.parametrize("path", [*LISTS, "/api/v1/events/export"])
def test_every_time_filter_takes_the_ends_of_the_calendar(api, stored, path, time):
    early = time in EARLY
    for parameter in LOWER + UPPER:
        selected = _matched(api.client.get(path, {parameter: time}))
        # An early lower bound or a late upper one keeps the event; the others leave none.
        assert selected == ([stored["id"]] if early == (parameter in LOWER) else []), (parameter, time)


@pytest.mark.parametrize("time", EARLY + LATE)
def test_the_stats_take_the_ends_of_the_calendar(api, stored, time):
    for parameter in LOWER + UPPER:
        for interval in ("hour", "week"):
            response = api.client.get("/api/v1/stats/counts", {parameter: time, "interval": interval})
            if response.status_code == 400:  # from year 1 to now: far more than 2,000 buckets
                assert [(e["field"], e["code"]) for e in response.json()["errors"]] == [
                    ("occurred_after", "range_too_large")
                ]
            else:
                assert response.status_code == 200, response.content[:300]
    both = api.client.get("/api/v1/stats/counts", {"occurred_after": time, "occurred_before": time})
    durations = api.client.get(
        "/api/v1/stats/durations",
        {"from_type": "billing.charged", "to_type": "billing.charged", "occurred_after": time},
    )

    assert both.status_code == 200 and both.json()["series"] == []
    assert durations.status_code == 200
    assert durations.json()["count"] == (1 if time in EARLY else 0)


@pytest.mark.parametrize(
    "time",
    ["2026-02-30T00:00:00Z", "0000-02-30T00:00:00Z", "9999-12-31T24:00:00Z", "9999-12-31T23:59:59+24:00",
     "10000-01-01T00:00:00Z", "0001-01-01"],
)  # fmt: skip
def test_an_impossible_time_is_still_a_400_naming_the_parameter(api, stored, time):
    for path in (*LISTS, "/api/v1/events/export", "/api/v1/stats/counts"):
        response = api.client.get(path, {"received_before": time})
        assert response.status_code == 400, (path, response.content[:300])
        assert [(e["field"], e["code"]) for e in response.json()["errors"]] == [("received_before", "invalid_datetime")]


def test_the_admin_date_filter_takes_the_ends_of_the_calendar(stored):
    client = Client()
    client.force_login(User.objects.create_superuser("root"))
    url = "/admin/events/event/"
    since_year_1 = {"occurred_at__range__gte_0": "0001-01-01", "occurred_at__range__gte_1": "00:00:00"}
    until_9999 = {"occurred_at__range__lte_0": "9999-12-31", "occurred_at__range__lte_1": "23:59:59"}
    until_year_1 = {"occurred_at__range__lte_0": "0001-01-01", "occurred_at__range__lte_1": "00:00:00"}
    since_9999 = {"occurred_at__range__gte_0": "9999-12-31", "occurred_at__range__gte_1": "23:59:59"}

    def listed(query: dict[str, str]) -> list[str]:
        response = client.get(url, query)
        assert response.status_code == 200, response.content[:300]
        return [str(event.id) for event in response.context["cl"].result_list if event.type.name == "billing.charged"]

    assert listed(since_year_1) == listed(until_9999) == listed({**since_year_1, **until_9999}) == [stored["id"]]
    assert listed(until_year_1) == listed(since_9999) == []


def test_bounds_clamp_to_the_calendar_and_ids_to_the_uuid7_field():
    assert parse_rfc3339_bound("0000-01-01T00:00:00Z") == EARLIEST
    assert parse_rfc3339_bound("0001-01-01T00:00:00+23:59") == EARLIEST
    assert parse_rfc3339_bound("9999-12-31T23:59:59-23:59") == LATEST
    assert parse_rfc3339_bound("9999-12-31T23:59:59+23:59") == datetime(9999, 12, 31, 0, 0, 59, tzinfo=UTC)
    with pytest.raises(ValueError, match="out of range"):  # an event's own time is never clamped
        parse_rfc3339("9999-12-31T23:59:59-23:59")
    assert shifted(EARLIEST, -timedelta(minutes=1)) == EARLIEST
    assert shifted(LATEST, timedelta(days=1)) == LATEST
    assert id_bounds_for_received(EARLIEST, LATEST) == (LOWEST_ID, uuid7_floor(LATEST))

"""Where a customer's timeline page of 100 spends its CPU, in process (cProfile).

    DATABASE_URL=… .venv/bin/python -m bench.profile_timeline [--requests 200]

Serves GET /api/v1/customers/{id}/events?page_size=100 for the customer with the most events
through Django's test client (the whole stack: middleware, DRF, the query, rendering, the
read record), first unprofiled for CPU per request and per event, then under cProfile, and
prints the stages' cumulative share. Written to run unchanged against an older checkout
(copy it in), so that the before and after come from one script.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time

from bench.django_setup import setup

# (stage, function names as pstats spells them: file suffix, function), both versions' names.
STAGES = [
    ("query: SQL + fetching rows", [("django/db/models/sql/compiler.py", "execute_sql")]),
    ("ORM: model instances", [("django/db/models/query.py", "__iter__")]),
    ("stored_event_from_row", [("events/queries.py", "stored_event_from_row")]),
    ("event_output", [("events/api/serializers.py", "event_output")]),
    ("readable_outputs", [("events/protection.py", "readable_outputs")]),
    ("rendering (renderer)", [("auditsvc/api/renderers.py", "render")]),
    ("pagination (whole)", [("auditsvc/api/pagination.py", "paginate")]),
    ("event_page (whole)", [("events/api/views.py", "event_page")]),
    ("recording the read", [("events/api/audited.py", "record_api_read")]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--page-size", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("AUDITSVC_RATE_LIMIT_PER_MINUTE", "0")
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # no line per request on the terminal
    setup()
    from django.db.models import Count  # noqa: PLC0415
    from django.test import Client  # noqa: PLC0415

    from events.keys import create_api_key  # noqa: PLC0415
    from events.models import Event, Source  # noqa: PLC0415

    heaviest = (
        Event.objects.filter(customer__isnull=False)
        .values("customer__external_id")
        .annotate(n=Count("id"))
        .order_by("-n")
        .values_list("customer__external_id", flat=True)
        .first()
    )
    source = Source.objects.order_by("id").first()
    assert heaviest is not None and source is not None, "load events first (bench.load_events)"
    key = create_api_key(source=source, scopes=["read"], name="profile").plaintext
    client = Client(headers={"Authorization": f"Bearer {key}"}, SERVER_NAME="127.0.0.1")
    url = f"/api/v1/customers/{heaviest}/events?page_size={args.page_size}"

    def one(page_size: int = args.page_size) -> int:
        response = client.get(f"/api/v1/customers/{heaviest}/events?page_size={page_size}")
        assert response.status_code == 200, response.content[:300]
        return response.content.count(b'"hash":')  # the events on the page, without parsing the page

    def cpu_ms(page_size: int) -> float:
        for _ in range(10):
            one(page_size)  # warm caches (keys, marks, types)
        started = time.process_time()
        for _ in range(args.requests):
            one(page_size)
        elapsed: float = time.process_time() - started
        return elapsed / int(args.requests) * 1e3

    events = one()
    full, single = cpu_ms(args.page_size), cpu_ms(1)
    # The marginal cost of an event: what a page of N costs beyond a page of 1, per extra event.
    per_event = (full - single) / (events - 1) * 1e3
    print(f"{url}: {events} events a page; CPU per request {full:.2f} ms (page of 1: {single:.2f} ms); "
          f"per event beyond the first {per_event:.1f} µs (fetching and rendering)")  # fmt: skip
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.requests):
        one()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    table = stats.stats  # type: ignore[attr-defined]
    print(f"under cProfile: {total / args.requests * 1e3:.2f} ms a request; cumulative per request:")
    for stage, names in STAGES:
        cumulative = sum(
            row[3] for (path, _, function), row in table.items() for suffix, name in names
            if path.endswith(suffix) and function == name
        )  # fmt: skip
        print(f"  {stage:<32} {cumulative / args.requests * 1e3:6.2f} ms  ({cumulative / total:5.1%})")
    stats.sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()

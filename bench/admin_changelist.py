"""Admin changelist server time on a loaded database (see bench/load_events.py).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/auditsvc_bench .venv/bin/python -m bench.admin_changelist

Renders /admin/events/event/ in-process (Django's test client: the full middleware, view and
template stack, no network) for the first page, every single filter and every kind of
search, and the admin's index (the log's health: events.dashboard); appends p50/p95 server
times to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.django_setup import setup
from bench.report import publish


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    setup()
    from django.conf import settings  # noqa: PLC0415
    from django.contrib.auth.models import User  # noqa: PLC0415
    from django.db.models import Sum  # noqa: PLC0415
    from django.test import Client  # noqa: PLC0415
    from django.test.utils import setup_test_environment  # noqa: PLC0415

    from customers.models import CustomerIdentity  # noqa: PLC0415
    from events.models import Event, EventType, HourlyCount, Source  # noqa: PLC0415

    setup_test_environment()
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    user, _ = User.objects.get_or_create(username="bench-admin", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(user)
    # The services' events: the log's own (this benchmark's reads among them) are hidden by default.
    services = Event.objects.exclude(source__slug="auditsvc")
    newest = services.order_by("-occurred_at").values_list("occurred_at", flat=True).first() or datetime.now(UTC)
    sample = (
        Event.objects.filter(customer__isnull=False, actor__startswith="staff")
        .select_related("customer")
        .order_by("-occurred_at")
        .first()
    )
    assert sample is not None and sample.customer is not None
    identity = CustomerIdentity.objects.first()
    service_types = EventType.objects.exclude(name__startswith="auditsvc.").filter(event_count__gt=0)
    common_type = service_types.order_by("-event_count").first()
    rare_type = service_types.order_by("event_count").first()
    source = Source.objects.exclude(slug="auditsvc").order_by("id").first()
    assert common_type and rare_type and source
    week_ago = newest - timedelta(days=7)
    cases: dict[str, dict[str, Any]] = {
        "first page": {},
        "filter: type (most common)": {"type__id__exact": common_type.pk},
        "filter: type (rarest)": {"type__id__exact": rare_type.pk},
        "filter: source": {"source__id__exact": source.pk},
        "filter: occurred in the last 7 days": {
            "occurred_at__range__gte_0": week_ago.date().isoformat(),
            "occurred_at__range__gte_1": "00:00:00",
        },
        "filter: without customer": {"has_customer": "no"},
        "search: event id": {"q": str(sample.id)},
        "search: customer external id": {"q": sample.customer.external_id},
        "search: actor": {"q": sample.actor},
        "search: description word": {"q": "coupon"},
        "search: two description words": {"q": "refund escalation"},
    }
    if identity:
        cases["search: identity system:id"] = {"q": f"{identity.system}:{identity.external_id}"}
    results = {}
    index = client.get("/admin/")
    assert index.status_code == 200 and b"log-health" in index.content
    index_timings = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        client.get("/admin/")
        index_timings.append((time.perf_counter() - started) * 1000)
    ordered_index = sorted(index_timings)
    hourly_rows = HourlyCount.objects.count()
    for name, params in cases.items():
        response = client.get("/admin/events/event/", params)
        assert response.status_code == 200, (name, response.status_code)
        timings = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            response = client.get("/admin/events/event/", params)
            timings.append((time.perf_counter() - started) * 1000)
        shown = len(response.context["cl"].result_list)
        ordered = sorted(timings)
        results[name] = (statistics.median(timings), ordered[int(0.95 * (len(ordered) - 1))], shown)
    total = EventType.objects.aggregate(n=Sum("event_count"))["n"]
    lines = [
        f"### Admin event changelist, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {total:,} events",
        "",
        "Command: `DATABASE_URL=postgres://postgres@127.0.0.1:5432/auditsvc_bench .venv/bin/python -m bench.admin_changelist` "
        f"({args.repeat} renders per case, in-process server time: middleware, view, queries, template). Target: < 300 ms.",
        "",
        "| case | p50 ms | p95 ms | rows shown |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {name} | {p50:.0f} | {p95:.0f} | {shown} |" for name, (p50, p95, shown) in results.items()],
        f"| the admin's index (the log's health; {hourly_rows:,} hourly-count rows) | "
        f"{statistics.median(index_timings):.0f} | {ordered_index[int(0.95 * (len(ordered_index) - 1))]:.0f} | — |",
    ]
    report = "\n".join(lines)
    publish(report, to_docs=not args.no_docs)


if __name__ == "__main__":
    main()

"""Read-path benchmark through the HTTP API on a loaded database (see bench/load_events.py).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/auditsvc_bench .venv/bin/python -m bench.read_api

Measures, under gunicorn (2 gthread workers), p50/p95 latency of the main queries, cursor
page 1,000 against page 1, and export throughput with the worker's peak RSS; records the
EXPLAIN (ANALYZE, BUFFERS) plans; appends everything, dated, to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from bench.django_setup import setup
from bench.report import publish
from bench.server import gunicorn, peak_rss_mb, worker_pids

PORT = 8765


class Client:
    def __init__(self, key: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=600)
        self.headers = {"Authorization": f"Bearer {key}"}

    def get(self, path: str, params: dict[str, Any] | None = None) -> tuple[float, Any]:
        url = path + ("?" + urlencode(params, doseq=True) if params else "")
        started = time.perf_counter()
        self.connection.request("GET", url, headers=self.headers)
        response = self.connection.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise RuntimeError(f"{url}: {response.status} {body[:300]!r}")
        return elapsed, json.loads(body)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(client: Client, requests: list[tuple[str, dict[str, Any]]]) -> dict[str, float]:
    for path, params in requests[:3]:
        client.get(path, params)  # warm-up
    timings = [client.get(path, params)[0] for path, params in requests]
    return {"n": len(timings), "p50": statistics.median(timings), "p95": percentile(timings, 0.95)}


def explain(params: dict[str, Any], *, customer_id: int | None = None) -> str:
    from django.http import QueryDict  # noqa: PLC0415

    from events.api.filters import EventFilterSet  # noqa: PLC0415
    from events.queries import events_queryset  # noqa: PLC0415

    data = QueryDict(mutable=True)
    for key, value in params.items():
        data.setlist(key, value if isinstance(value, list) else [value])
    queryset = events_queryset() if customer_id is None else events_queryset().filter(customer_id=customer_id)
    filtered = EventFilterSet(data, queryset=queryset).qs.order_by("-occurred_at", "-id")[:51]
    return str(filtered.explain(analyze=True, buffers=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests per scenario")
    parser.add_argument("--no-docs", action="store_true", help="print only; do not append to docs/BENCHMARKS.md")
    args = parser.parse_args()
    setup()
    from django.db import connection  # noqa: PLC0415
    from django.db.models import Count, Sum  # noqa: PLC0415

    from customers.models import Customer  # noqa: PLC0415
    from events.keys import create_api_key  # noqa: PLC0415
    from events.models import Event, EventType, Source  # noqa: PLC0415

    rng = random.Random(5)
    total = EventType.objects.aggregate(n=Sum("event_count"))["n"] or 0
    key = create_api_key(source=Source.objects.order_by("id").first(), scopes=["read"], name="bench").plaintext  # type: ignore[arg-type]
    customers = list(Customer.objects.order_by("?").values_list("external_id", "id")[:300])
    heavy = list(
        Event.objects.filter(customer__isnull=False, occurred_at__gte=datetime(2026, 10, 25, tzinfo=UTC))
        .values("customer__external_id")
        .annotate(n=Count("id"))
        .order_by("-n")
        .values_list("customer__external_id", flat=True)[:20]
    )
    types = list(EventType.objects.order_by("-event_count").values_list("name", flat=True))
    newest = Event.objects.order_by("-occurred_at").values_list("occurred_at", flat=True).first()
    assert newest is not None
    # A real invoice id, from a recent event (ORDER BY random() would scan the table).
    sample_invoice = (
        Event.objects.filter(occurred_at__gte=newest - timedelta(days=3))
        .values_list("payload__invoice__id", flat=True)
        .first()
    )
    results: dict[str, dict[str, float]] = {}
    n = args.requests

    with gunicorn(PORT) as server:
        client = Client(key)
        timeline: list[tuple[str, dict[str, Any]]] = [
            (f"/api/v1/customers/{rng.choice(customers)[0]}/events", {}) for _ in range(n)
        ]
        results["customer timeline, first page (random customers)"] = measure(client, timeline)
        results["customer timeline, first page (heaviest customers)"] = measure(
            client, [(f"/api/v1/customers/{rng.choice(heavy)}/events", {}) for _ in range(n)]
        )
        week = []
        for _ in range(n):
            start = newest - timedelta(days=rng.randrange(7, 360))
            week.append(("/api/v1/events", {"type": rng.choice(types[:40]), "occurred_after": start.isoformat(),
                                             "occurred_before": (start + timedelta(days=7)).isoformat()}))  # fmt: skip
        results["type + 7-day range, first page"] = measure(client, week)
        containment = [("/api/v1/events", {"payload": json.dumps({"invoice": {"id": f"in_{rng.randrange(10**9):09d}"}})})
                       for _ in range(n - 1)] + [("/api/v1/events", {"payload": json.dumps({"invoice": {"id": sample_invoice}})})]  # fmt: skip
        results["payload containment, rare value (invoice id)"] = measure(client, containment)
        common = [("/api/v1/events", {"payload": json.dumps({"plan": rng.choice(["pro", "team"])}),
                                      "type": rng.choice(types[:10])}) for _ in range(n)]  # fmt: skip
        results["payload containment, common value (plan) + type"] = measure(client, common)

        # Cursor page 1,000 against page 1 on the default listing (newest first, 50 a page).
        _, body = client.get("/api/v1/events", {"page_size": 50})
        first_page_cursorless = measure(client, [("/api/v1/events", {"page_size": 50})] * 50)
        next_url = body["next"]
        for _ in range(998):
            _, body = client.get(urlsplit(next_url).path + "?" + urlsplit(next_url).query)
            next_url = body["next"]
        page_1000 = urlsplit(next_url).path + "?" + urlsplit(next_url).query
        results["default listing, page 1"] = first_page_cursorless
        results["default listing, cursor page 1,000"] = measure(client, [(page_1000, {})] * 50)

        # Export about a million events: the most recent ~36 days.
        since = newest - timedelta(days=37)
        exported, started = 0, time.perf_counter()
        connection_ = http.client.HTTPConnection("127.0.0.1", PORT, timeout=600)
        connection_.request("GET", "/api/v1/events/export?" + urlencode({"occurred_after": since.isoformat()}),
                            headers=client.headers)  # fmt: skip
        response = connection_.getresponse()
        while chunk := response.read(1 << 20):
            exported += chunk.count(b"\n")
        export_seconds = time.perf_counter() - started
        rss = max(peak_rss_mb(pid) for pid in worker_pids(server.pid))

    plans = {
        "customer timeline": explain({}, customer_id=Customer.objects.get(external_id=heavy[0]).id),
        "type + 7-day range": explain(
            {
                "type": types[5],
                "occurred_after": (newest - timedelta(days=60)).isoformat(),
                "occurred_before": (newest - timedelta(days=53)).isoformat(),
            }
        ),  # fmt: skip
        "payload containment (rare)": explain({"payload": json.dumps({"invoice": {"id": sample_invoice}})}),
        "full-text q": explain({"q": "refund coupon"}),
    }
    with connection.cursor() as cursor:
        # A partitioned table has no storage of its own: its size is its partitions'.
        cursor.execute(
            "SELECT pg_size_pretty(sum(pg_total_relation_size(inhrelid))::bigint) || ' in '"
            " || count(*) || ' partitions', version() FROM pg_inherits WHERE inhparent = 'events_event'::regclass"
        )
        table_size, version = cursor.fetchone()

    rows = [f"| {name} | {r['n']} | {r['p50']:.1f} | {r['p95']:.1f} |" for name, r in results.items()]
    ratio = results["default listing, cursor page 1,000"]["p50"] / results["default listing, page 1"]["p50"]
    report = "\n".join(
        [
            f"### Read path, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {total:,} events ({table_size} with indexes)",
            "",
            "Command: `DATABASE_URL=postgres://postgres@127.0.0.1:5432/auditsvc_bench .venv/bin/python -m "
            f"bench.read_api` (data: `bench.load_events --count {total}`); {version.split(' on ')[0]}; gunicorn 2 "
            "gthread workers × 4 threads; one client, keep-alive; latencies in ms, end to end through HTTP.",
            "",
            "| query | requests | p50 ms | p95 ms |",
            "| --- | ---: | ---: | ---: |",
            *rows,
            "",
            f"Cursor page 1,000 / page 1 (p50): **{ratio:.2f}×**.",
            f"Export: {exported:,} events in {export_seconds:.1f} s = **{exported / export_seconds:,.0f} events/s** "
            f"(NDJSON, uncompressed); gunicorn worker peak RSS **{rss:.0f} MB**.",
            "",
            *[
                f"<details><summary>EXPLAIN ANALYZE: {name}</summary>\n\n```\n{plan}\n```\n</details>\n"
                for name, plan in plans.items()
            ],  # fmt: skip
        ]
    )
    publish(report, to_docs=not args.no_docs)


if __name__ == "__main__":
    main()

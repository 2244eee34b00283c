"""What recording every read (auditsvc.read, events.access_log) costs the read it records.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/auditsvc_bench .venv/bin/python -m bench.read_audit_cost

The same read requests (a customer's timeline, the default listing, a type + 7-day range)
against gunicorn (2 gthread workers, 4 threads each, one keep-alive client) with
AUDITSVC_AUDIT_READS=false and =true, in alternating rounds so that drift in the machine hits
both alike; p50/p95 per setting and their ratio. Then checks that every read of the "true"
rounds was stored as an event. Appends to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.django_setup import setup
from bench.read_api import PORT, Client, percentile
from bench.report import publish
from bench.server import gunicorn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per setting")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    setup()
    from django.db.models import Sum  # noqa: PLC0415

    from customers.models import Customer  # noqa: PLC0415
    from events.keys import create_api_key  # noqa: PLC0415
    from events.models import Event, EventType, Source  # noqa: PLC0415
    from events.service_events import READ_TYPE  # noqa: PLC0415

    rng = random.Random(7)
    total = EventType.objects.aggregate(n=Sum("event_count"))["n"] or 0
    source = Source.objects.exclude(slug="auditsvc").order_by("id").first()
    assert source is not None, "load events first (bench.load_events)"
    key = create_api_key(source=source, scopes=["read"], name="bench-audit").plaintext
    customers = list(Customer.objects.order_by("?").values_list("external_id", flat=True)[:300])
    types = list(EventType.objects.exclude(name__startswith="auditsvc.").order_by("-event_count")
                 .values_list("name", flat=True)[:20])  # fmt: skip
    newest = Event.objects.order_by("-occurred_at").values_list("occurred_at", flat=True).first() or datetime.now(UTC)
    requests: list[tuple[str, dict[str, Any]]] = []
    for n in range(args.requests):
        kind = n % 3
        if kind == 0:
            requests.append((f"/api/v1/customers/{rng.choice(customers)}/events", {}))
        elif kind == 1:
            requests.append(("/api/v1/events", {"page_size": 50}))
        else:
            start = newest - timedelta(days=rng.randrange(7, 300))
            requests.append(("/api/v1/events", {"type": rng.choice(types), "occurred_after": start.isoformat(),
                                                "occurred_before": (start + timedelta(days=7)).isoformat()}))  # fmt: skip

    def reads_stored() -> int:
        return Event.objects.filter(type__name=READ_TYPE, actor__startswith="key:").count()

    timings: dict[str, list[float]] = {"false": [], "true": []}
    recorded_before = reads_stored()
    for _ in range(args.rounds):
        for setting in ("false", "true"):
            with gunicorn(PORT, workers=2, threads=4, environment={"AUDITSVC_AUDIT_READS": setting}):
                client = Client(key)
                for path, params in requests[:5]:
                    client.get(path, params)  # warm-up
                timings[setting] += [client.get(path, params)[0] for path, params in requests]
    time.sleep(2)  # the last server stored its reads at its shutdown; let the count settle
    recorded = reads_stored() - recorded_before
    sent_with_audit = args.rounds * (len(requests) + 5)

    def row(setting: str) -> tuple[float, float]:
        return statistics.median(timings[setting]), percentile(timings[setting], 0.95)

    off, on = row("false"), row("true")
    lines = [
        f"### The cost of recording every read, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {total:,} events",
        "",
        "Command: `DATABASE_URL=postgres://postgres@127.0.0.1:5432/auditsvc_bench .venv/bin/python -m "
        f"bench.read_audit_cost` ({args.rounds} alternating rounds × {len(requests)} requests per setting: "
        "customer timelines, the default listing, type + 7-day ranges; gunicorn 2 gthread workers × 4 threads; "
        "one keep-alive client; ms end to end).",
        "",
        "| AUDITSVC_AUDIT_READS | requests | p50 ms | p95 ms |",
        "| --- | ---: | ---: | ---: |",
        f"| false (reference) | {len(timings['false'])} | {off[0]:.2f} | {off[1]:.2f} |",
        f"| true | {len(timings['true'])} | {on[0]:.2f} | {on[1]:.2f} |",
        "",
        f"Ratio true / false: p50 **{on[0] / off[0]:.3f}**, p95 **{on[1] / off[1]:.3f}**. "
        f"Reads stored as `auditsvc.read` events: {recorded:,} of the {sent_with_audit:,} sent with it on.",
    ]
    publish("\n".join(lines), to_docs=not args.no_docs)


if __name__ == "__main__":
    main()

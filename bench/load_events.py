"""Load N realistic events through the one write path (events.ingest.ingest_events → COPY).

    .venv/bin/python -m bench.load_events --count 10000000 [--workers 2] [--batch 5000]

Each worker's events arrive in time order through the corpus's year (to 2026-11-01), each
a moment (0-3 s) after it occurred, as an import of that history would store them: an id is
a UUIDv7 of its receipt, so the events fill twelve monthly partitions (`--received-now` stores them all as
received today instead, as version 1's loader did).

Uses DATABASE_URL (or the embedded database), migrating it first. Each worker process
generates its own seeded share of the corpus, so a rerun loads the same kind of data.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from dataclasses import replace
from datetime import timedelta
from random import Random
from typing import Any

from bench.django_setup import setup


def _load(worker: int, count: int, batch: int, progress: multiprocessing.Queue, received_now: bool) -> None:  # type: ignore[type-arg]
    setup()
    from events.demo import END, SPAN_SECONDS, Corpus  # noqa: PLC0415 - after django.setup()
    from events.ids import uuid7_at  # noqa: PLC0415
    from events.ingest.validation import parse_event  # noqa: PLC0415
    from events.ingest.write import ingest_events  # noqa: PLC0415
    from events.models import Source  # noqa: PLC0415

    start = END - timedelta(seconds=SPAN_SECONDS)
    corpus = Corpus(seed=1000 + worker)
    delays = Random(2000 + worker)
    span = (END - start).total_seconds()
    sources = list(Source.objects.filter(slug__in=("billing", "auth", "shop")).order_by("slug"))

    def _received_in_order(item: Any, n: int) -> Any:
        # The n-th of this worker's events arrives n/count of the way through the year, a
        # moment after it occurred: as a service's events arrive, in time order.
        received = start + timedelta(seconds=span * (n / count))
        occurred = received - timedelta(microseconds=delays.randrange(3_000_000))
        return replace(item, occurred_at=occurred, event_id=uuid7_at(received), received_at=received)

    done = 0
    while done < count:
        size = min(batch, count - done)
        items = [parse_event(raw) for raw in corpus.events(size)]
        if not received_now:
            items = [_received_in_order(item, done + n) for n, item in enumerate(items)]
        ingest_events(source=sources[(done // batch) % len(sources)], items=items)
        done += size
        progress.put(size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--received-now", action="store_true", help="every event received today (one partition)")
    args = parser.parse_args()
    elapsed = load(count=args.count, workers=args.workers, batch=args.batch, received_now=args.received_now)
    print(f"\nloaded {args.count:,} events in {elapsed:,.0f} s ({args.count / elapsed:,.0f} events/s)")


def load(*, count: int, workers: int = 2, batch: int = 5000, received_now: bool = False) -> float:
    """Migrate, then load count events with workers processes; returns the seconds it took."""
    setup()
    from django.core.management import call_command  # noqa: PLC0415

    call_command("migrate", verbosity=0)
    from django.db import connections  # noqa: PLC0415

    from events.demo import TYPES  # noqa: PLC0415
    from events.models import EventType, Source  # noqa: PLC0415

    for slug in ("billing", "auth", "shop"):
        Source.objects.get_or_create(slug=slug, defaults={"name": slug})
    EventType.objects.bulk_create([EventType(name=name) for name in TYPES], ignore_conflicts=True)
    connections.close_all()  # the workers fork: they must not share this process's connection
    progress: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    shares = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
    started = time.perf_counter()
    processes = [
        multiprocessing.Process(target=_load, args=(i, share, batch, progress, received_now))
        for i, share in enumerate(shares)
    ]
    for process in processes:
        process.start()
    loaded = 0
    while loaded < count:
        loaded += progress.get()
        rate = loaded / (time.perf_counter() - started)
        sys.stderr.write(f"\r{loaded:>12,} / {count:,} events  {rate:,.0f}/s  ")
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - started
    from events.ingest.type_counts import rebuild_event_type_counts  # noqa: PLC0415

    rebuild_event_type_counts()
    with connections["default"].cursor() as cursor:
        cursor.execute("SET statement_timeout = 0")  # minutes at 10M rows; the service's cap is 30 s
        cursor.execute("VACUUM ANALYZE events_event")
    return elapsed


if __name__ == "__main__":
    main()

"""Seal and verify benchmark: load N events, seal them, time verify_events' checks.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/auditsvc_verify .venv/bin/python -m bench.integrity --count 1000000

Use an empty database: the events loaded here are the ones sealed and verified.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from bench.load_events import load
from bench.report import publish


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--workers", type=int, default=2, help="verify_events --workers for the parallel run")
    parser.add_argument("--verify-only", action="store_true", help="re-verify an already loaded and sealed database")
    args = parser.parse_args()
    if args.verify_only:
        from bench.django_setup import setup  # noqa: PLC0415

        setup()
        load_seconds = seal_seconds = float("nan")
    else:
        load_seconds = load(count=args.count)
    from events.integrity.sealing import seal_events  # noqa: PLC0415 - after django.setup()
    from events.integrity.verification import verify_integrity  # noqa: PLC0415
    from events.models import Seal  # noqa: PLC0415

    started = time.perf_counter()
    if not args.verify_only:
        seal_events(lag_seconds=0)
        seal_seconds = time.perf_counter() - started
    seals = list(Seal.objects.all())
    timings: dict[int, list[float]] = {}
    for workers in (1, args.workers, 1, args.workers):  # alternately: the machine's noise falls on both
        started = time.perf_counter()
        report = verify_integrity(workers=workers)
        timings.setdefault(workers, []).append(time.perf_counter() - started)
        assert report.ok, report.findings[:5]
        assert report.events_checked == args.count, report.events_checked
    verify_seconds = min(timings[1])
    parallel_seconds = min(timings[args.workers])
    lines = [
        f"### Integrity, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {args.count:,} events",
        "",
        "Command: `DATABASE_URL=postgres://postgres@127.0.0.1:5432/auditsvc_verify .venv/bin/python -m "
        f"bench.integrity --count {args.count} --workers {args.workers}{' --verify-only' if args.verify_only else ''}` "
        "(an empty database; PostgreSQL 15, 2 cores).",
        "",
        "| step | seconds | events/s |",
        "| --- | ---: | ---: |",
        *(
            []
            if args.verify_only
            else [
                f"| load through ingest_events (2 processes) | {load_seconds:.1f} | {args.count / load_seconds:,.0f} |",
                f"| seal_events ({len(seals)} seals) | {seal_seconds:.1f} | {args.count / seal_seconds:,.0f} |",
            ]
        ),
        f"| verify_events, one process (every hash, root, link, signature) | {verify_seconds:.1f} | "
        f"{args.count / verify_seconds:,.0f} |",
        f"| verify_events --workers {args.workers} | {parallel_seconds:.1f} | {args.count / parallel_seconds:,.0f} |",
        "",
        f"Verification, best of two alternating runs each: one process {', '.join(f'{t:.1f}' for t in timings[1])} s; "
        f"{args.workers} workers {', '.join(f'{t:.1f}' for t in timings[args.workers])} s "
        f"({verify_seconds / parallel_seconds:.2f}x). Target: 1,000,000 events in at most 8 s → "
        f"**{parallel_seconds * 1_000_000 / args.count:.1f} s** per million with {args.workers} workers here.",
    ]
    report_text = "\n".join(lines)
    publish(report_text, to_docs=not args.no_docs)


if __name__ == "__main__":
    main()

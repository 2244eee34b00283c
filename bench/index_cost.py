"""What each index of events_event costs the write path: COPY of the same rows with and without it.

    .venv/bin/python -m bench.index_cost [--rows 200000] [--rounds 2]

On a fresh benchmark database (bench.ingest's), a twin of events_event (`LIKE ... INCLUDING
ALL`: every index, the checks) receives the same service-shaped rows by COPY, once with every
index and once with each secondary index dropped in turn, in rounds that alternate the order
so that the machine's noise falls on all of them alike. An index's cost is the COPY time it
adds, as a share of the time with every index; the last row drops them all (the primary key
alone).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent


def timed(url: str, rows: list[tuple[Any, ...]], without: str | None) -> float:
    from bench.ingest import timed_copy  # noqa: PLC0415

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS index_cost")
        connection.execute("CREATE TABLE index_cost (LIKE events_event INCLUDING ALL)")
        if without == "*":  # the primary key alone
            for (name,) in connection.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'index_cost' AND indexname NOT LIKE '%%pkey'"
            ).fetchall():
                connection.execute(f'DROP INDEX "{name}"')
        elif without:
            twin = connection.execute(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_class t ON t.oid = i.indrelid WHERE t.relname = 'index_cost' "
                "AND substring(pg_get_indexdef(i.indexrelid) from ' USING .*') "
                "= substring(pg_get_indexdef(%s::regclass) from ' USING .*')",
                [without],
            ).fetchone()
            assert twin is not None, f"no twin of {without}"
            connection.execute(f'DROP INDEX "{twin[0]}"')
        connection.execute("CHECKPOINT")
        seconds = timed_copy(connection, "index_cost", rows)
        connection.execute("DROP TABLE index_cost")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from bench.ingest import fresh_database, service_rows  # noqa: PLC0415

    url = fresh_database()
    os.environ["DATABASE_URL"] = url
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
    from bench.django_setup import setup  # noqa: PLC0415

    setup()
    with psycopg.connect(url) as connection:
        indexes = [name for (name,) in connection.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'events_event' AND indexname <> 'events_event_pkey' "
            "ORDER BY indexname"
        ).fetchall()]  # fmt: skip
    rows = service_rows(args.rows)
    variants: list[str | None] = [None, *indexes, "*"]
    times: dict[str | None, list[float]] = {variant: [] for variant in variants}
    for round_ in range(args.rounds):
        for variant in variants if round_ % 2 == 0 else list(reversed(variants)):
            times[variant].append(timed(url, rows, variant))
    full = statistics.median(times[None])
    print(f"COPY of {args.rows:,} rows with every index: {args.rows / full:,.0f} rows/s "
          f"(median of {args.rounds}; each round {', '.join(f'{args.rows / t:,.0f}' for t in times[None])})")  # fmt: skip
    print("| index dropped | rows/s without it | share of the COPY time it costs |")
    print("| --- | ---: | ---: |")
    for name in sorted(indexes, key=lambda n: statistics.median(times[n])):
        seconds = statistics.median(times[name])
        print(f"| `{name}` | {args.rows / seconds:,.0f} | {100 * (full - seconds) / full:.1f} % |")
    bare = statistics.median(times["*"])
    print(
        f"| every secondary index (the primary key alone) | {args.rows / bare:,.0f} | {100 * (full - bare) / full:.1f} % |"
    )


if __name__ == "__main__":
    main()

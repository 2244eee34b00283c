"""Stream-mode accept with grouped appends on and off, alternating in one run (issue 26, part 3).

    .venv/bin/python -m bench.stream_ab [--seconds 12] [--rounds 4] [--no-docs]

One database, one redis-server (AOF, appendfsync always: what stream mode demands), one gunicorn
setup (2 gthread workers x 8 threads, production settings, as bench.ingest_ab); round after
round, AUDITSVC_STREAM_GROUPED_APPENDS=false then true, each its own gunicorn start, wrk
single-event POSTs at 16 connections, no drainer (the accept rate alone, as bench.stream's first
phase). After each run every acknowledged id is checked to be in the stream exactly once, then
the Redis is emptied so that every run starts from the same empty stream. Appended to
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis

from bench.ingest import bench_source, event_bodies, fresh_database, wrk
from bench.redis_server import redis_server
from bench.report import publish
from bench.server import gunicorn

ROOT = Path(__file__).resolve().parent.parent
PORT = 8768
WORKERS, THREADS, CONNECTIONS = 2, int(os.environ.get("GUNICORN_THREADS", "8")), 16
SETTINGS = ("false", "true")  # old, then new, in every round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    # A database of its own (not bench.ingest's): other benchmarks may run on this machine meanwhile.
    os.environ["DATABASE_URL"] = fresh_database("stream_ab")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
    from bench.django_setup import setup  # noqa: PLC0415 - events.demo needs Django's apps

    setup()
    _, key = bench_source()
    bodies = event_bodies(2000, None)
    rates: dict[str, list[float]] = {grouped: [] for grouped in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="stream-ab-") as scratch:
        (Path(scratch) / "redis").mkdir()
        with redis_server(Path(scratch) / "redis") as server:
            measure(args, server, key=key, bodies=bodies, workdir=Path(scratch), rates=rates)
    report(args, rates)


def measure(args: argparse.Namespace, server: Any, *, key: str, bodies: list[str], workdir: Path,
            rates: dict[str, list[float]]) -> None:  # fmt: skip
    """The rounds: off then on in each, the accept rate of each run appended to rates."""
    from events.ingest.stream import stream_key  # noqa: PLC0415 - Django is set up by now

    for round_ in range(args.rounds):
        for grouped in SETTINGS:
            env = {"AUDITSVC_INGEST_MODE": "stream", "AUDITSVC_STREAM_URL": server.url,
                   "AUDITSVC_STREAM_GROUPED_APPENDS": grouped}  # fmt: skip
            with gunicorn(PORT, workers=WORKERS, threads=THREADS, environment=env):
                result: dict[str, Any] = wrk(f"http://127.0.0.1:{PORT}/api/v1/events", bodies,
                                             seconds=args.seconds, connections=CONNECTIONS, key=key,
                                             workdir=workdir)  # fmt: skip
            _check_stored_once(redis.Redis(port=server.port), stream_key(0), result)
            rates[grouped].append(float(result["events"]) / float(result["seconds"]))
        print(f"round {round_ + 1}: on/off {rates['true'][-1] / rates['false'][-1]:.2f}")


def _check_stored_once(client: Any, key: str, result: dict[str, Any]) -> None:
    """Exits unless every acknowledged id is in the stream exactly once; then empties the Redis."""
    acknowledged = [k.removeprefix("id:") for k in result["keys"]]
    in_stream = Counter(orjson.loads(fields[b"e"])["id"] for _, fields in client.xrange(key))
    if result["failed"] or any(in_stream[event_id] != 1 for event_id in acknowledged):
        sys.exit(f"failed requests ({result['failed']}), or an acknowledged id not in the stream exactly once")
    client.flushall()


def report(args: argparse.Namespace, rates: dict[str, list[float]]) -> None:
    ratios = [on / off for off, on in zip(rates["false"], rates["true"], strict=True)]
    rows = "\n".join(
        f"| {n + 1} | {off:,.0f} events/s | {on:,.0f} events/s | {ratio:.2f} |"
        for n, (off, on, ratio) in enumerate(zip(rates["false"], rates["true"], ratios, strict=True))
    )
    text = f"""
## Stream mode: grouped appends (issue 26, part 3) ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)

`.venv/bin/python -m bench.stream_ab --seconds {args.seconds} --rounds {args.rounds}` on this 2-core
machine: stream mode, {WORKERS} gthread workers x {THREADS} threads, wrk single-event POSTs at
{CONNECTIONS} connections, no drainer, one redis-server (appendfsync always) for both; per round
`AUDITSVC_STREAM_GROUPED_APPENDS=false` (one round trip per accept) then `true`, each acknowledged
id checked to be in the stream exactly once.

| round | off (per call) | on (grouped) | on/off |
| --- | ---: | ---: | ---: |
{rows}

Median on/off: **{statistics.median(ratios):.2f}**.
"""
    publish(text, to_docs=not args.no_docs)


if __name__ == "__main__":
    main()

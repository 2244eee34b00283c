"""Ingest benchmark (`make bench`): the write path against PostgreSQL's own limits, in one run.

    .venv/bin/python -m bench.ingest [--seconds 15] [--no-docs]

1. a fresh database (`<DATABASE_URL's db>_ingest_bench`, or one in the embedded server);
2. reference (a): raw `COPY` of the same rows into a copy of events_event with its indexes;
3. reference (b): a trivial Django view (parse JSON, 201) on the same gunicorn setup, and
   (c) the same view with no middleware at all: what the framework costs at its barest;
   each measured before and after the service's phases, the better run counting;
4. the service under gunicorn (production settings, 2 workers) driven by wrk (separate
   process, keep-alive): single-event POST at concurrency 16, batch POST of 100 and 1,000;
5. stream mode (bench.stream): accept rate, drain rate against a raw COPY of the same rows,
   and the end-to-end lag under steady load;
6. every acknowledged event is checked to be in the database exactly once;
   then the CPU per single event in-process (bench.profile_wsgi: direct, stream, the bare view);
7. one table, appended with the date and this command to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
import psycopg

from bench.report import publish

ROOT = Path(__file__).resolve().parent.parent
PORT = 8766
WORKERS, THREADS = 2, int(os.environ.get("GUNICORN_THREADS", "8"))


def fresh_database(name_suffix: str = "ingest_bench") -> str:
    """DATABASE_URL of a new, empty database on the configured (or embedded) server."""
    base = os.environ.get("DATABASE_URL")
    if base:
        admin_url = base
        name = base.rsplit("/", 1)[1].split("?")[0] + "_" + name_suffix
        url = base.rsplit("/", 1)[0] + "/" + name
    else:
        sys.path.insert(0, str(ROOT))
        from auditsvc.embedded_db import embedded_database_settings  # noqa: PLC0415

        db = embedded_database_settings(ROOT / "var" / "pg")
        admin_url = f"postgresql://{db['USER']}@{quote(db['HOST'], safe='')}/{db['NAME']}"
        name = name_suffix
        url = f"postgresql://{db['USER']}@{quote(db['HOST'], safe='')}/{name}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    return url


def wrk(url: str, bodies: list[str], *, seconds: int, connections: int, key: str, workdir: Path) -> dict[str, Any]:
    """Run wrk with bench/wrk/post.lua; returns its RESULT line plus the acknowledged keys.

    gunicorn's workers accept from one shared socket, and wrk opens its connections in one
    burst: now and then one worker takes (nearly) all of them and the run measures a third of
    the rate. Such a run is discarded and made again (up to three times); `attempts` and
    `connections_per_worker` say what happened.
    """
    for attempt in range(1, 4):
        result = _wrk_once(url, bodies, seconds=seconds, connections=connections, key=key, workdir=workdir)
        spread = result["connections_per_worker"]
        balanced = not spread or max(spread) <= max(1, math.ceil(0.75 * sum(spread)))
        if balanced or attempt == 3:
            result["attempts"] = attempt
            return result
    raise AssertionError("unreachable")


def _wrk_once(
    url: str, bodies: list[str], *, seconds: int, connections: int, key: str, workdir: Path
) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    bodies_file = run_dir / "bodies.txt"
    bodies_file.write_text("\n".join(bodies) + "\n")
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s",
               str(ROOT / "bench" / "wrk" / "post.lua"), url, "--", str(bodies_file), str(run_dir), run_dir.name]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "AUDITSVC_BENCH_KEY": key})  # fmt: skip
    time.sleep(min(1.0, seconds / 3))
    spread = _connections_per_process(urlsplit(url).port or 80)
    stdout, stderr = process.communicate()
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command, stdout, stderr)
    line = next(line for line in stdout.splitlines() if line.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    result["keys"] = [k for f in run_dir.glob("acked-*.txt") for k in f.read_text().split()]
    result["connections_per_worker"] = spread
    return result


def _connections_per_process(port: int) -> list[int]:
    """Established connections on the server side of port, per process holding them ([] without ss)."""
    if not shutil.which("ss"):
        return []
    listing = subprocess.run(["ss", "-tnpH", "state", "established", "sport", f"= :{port}"],
                             capture_output=True, text=True, check=False).stdout  # fmt: skip
    return sorted(Counter(re.findall(r"pid=(\d+)", listing)).values(), reverse=True)


def event_bodies(count: int, batch: int | None) -> list[str]:
    """Realistic bodies (~400-byte events) with __KEY__ where each idempotency key goes."""
    from events.demo import Corpus  # noqa: PLC0415

    corpus = Corpus(seed=99)
    if batch is None:
        return [json.dumps({**corpus.event(with_time=False), "idempotency_key": "__KEY__"}) for _ in range(count)]
    return [
        json.dumps(
            {"events": [{**corpus.event(with_time=False), "idempotency_key": f"__KEY__e{i}"} for i in range(batch)]}
        )
        for _ in range(count)
    ]


def timed_copy(connection: psycopg.Connection[Any], table: str, rows: list[tuple[Any, ...]]) -> float:
    """Seconds a raw COPY of events_event rows into table takes, in one transaction, commit
    (and deferred foreign key checks) included; the text is formatted before the clock starts."""
    from events.ingest.copy import EVENT_COLUMNS, copy_texts  # noqa: PLC0415

    data = copy_texts(rows)[0].encode()
    started = time.perf_counter()
    with (
        connection.transaction(),
        connection.cursor() as cursor,
        cursor.copy(f"COPY {table} ({EVENT_COLUMNS}) FROM STDIN") as copy,
    ):
        for offset in range(0, len(data), 1 << 20):
            copy.write(data[offset : offset + (1 << 20)])
    return time.perf_counter() - started


def service_rows(rows: int, *, seed: int = 7) -> list[tuple[Any, ...]]:
    """events_event rows (EVENT_COLUMNS) as the service stores them: demo events, real hashes,
    50 types, one source, 1,000 customers (the ids the benchmark database holds)."""
    from events.demo import Corpus  # noqa: PLC0415
    from events.ids import uuid7  # noqa: PLC0415
    from events.integrity.hashing import event_hash  # noqa: PLC0415

    corpus = Corpus(seed=seed)
    now = datetime.now(UTC)
    built = []
    for n in range(rows):
        raw = corpus.event(with_time=False)
        event_id = uuid7()
        digest = event_hash(event_id=event_id, type_name=raw["type"], source_slug="bench", customer=raw["customer"],
                            actor=raw["actor"], occurred_at=now, received_at=now, description=raw["description"],
                            payload=raw["payload"])  # fmt: skip
        built.append((event_id, 1 + n % 50, 1, 1 + n % 1000, raw["actor"], now, now, raw["description"],
                      orjson.dumps(raw["payload"]).decode(), f"ref-{n}", digest, None, None, None))  # fmt: skip
    return built


def copy_reference(url: str, rows: int) -> float:
    """Events/s of a raw COPY of service-shaped rows into a copy of events_event (same indexes)."""
    batch = service_rows(rows)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS copy_reference")
        connection.execute("CREATE TABLE copy_reference (LIKE events_event INCLUDING ALL)")
        elapsed = timed_copy(connection, "copy_reference", batch)
        connection.execute("DROP TABLE copy_reference")
    return rows / elapsed


def migrated_database(*, collectstatic: bool = False) -> str:
    """A fresh, migrated database for a load benchmark (wrk is checked for first), with Django set
    up on it in this process; its URL."""
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    url = fresh_database()
    os.environ["DATABASE_URL"] = url
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
    if collectstatic:
        subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, check=True)
    from bench.django_setup import setup  # noqa: PLC0415

    setup()
    return url


def bench_source() -> tuple[Any, str]:
    """The "bench" source with an ingest key (its plaintext), and the demo's event types."""
    from django.db import connection  # noqa: PLC0415

    from events.demo import TYPES  # noqa: PLC0415
    from events.keys import create_api_key  # noqa: PLC0415
    from events.models import EventType, Source  # noqa: PLC0415

    source = Source.objects.create(slug="bench", name="Benchmark")
    key = create_api_key(source=source, scopes=["ingest"]).plaintext
    EventType.objects.bulk_create([EventType(name=name) for name in TYPES], ignore_conflicts=True)
    connection.close()
    return source, key


def cpu_per_event(url: str, workdir: Path) -> dict[str, float]:
    """CPU µs per single event of each mode and of the bare view, in-process (bench.profile_wsgi):
    steadier than a rate under load on this noisy machine."""
    from bench.profile_wsgi import cpu_per_request  # noqa: PLC0415
    from bench.redis_server import redis_server  # noqa: PLC0415

    (workdir / "cpu-redis").mkdir(exist_ok=True)
    with redis_server(workdir / "cpu-redis") as stream_redis:
        env = {**os.environ, "DATABASE_URL": url, "DEBUG": "false", "LOG_FORMAT": "json", "ALLOWED_HOSTS": "*",
               "AUDITSVC_STREAM_URL": stream_redis.url}  # fmt: skip
        return {
            "direct": cpu_per_request("auditsvc.wsgi", {**env, "AUDITSVC_INGEST_MODE": "direct"}, 3000),
            "stream": cpu_per_request("auditsvc.wsgi", {**env, "AUDITSVC_INGEST_MODE": "stream"}, 3000),
            "bare": cpu_per_request("bench.trivial_wsgi", {**env, "BENCH_BARE": "1"}, 3000),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=15, help="duration of each load phase")
    parser.add_argument("--copy-rows", type=int, default=200_000)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    url = migrated_database(collectstatic=True)
    from django.db import connection  # noqa: PLC0415

    from bench import stream as bench_stream  # noqa: PLC0415
    from bench.server import gunicorn  # noqa: PLC0415
    from events.demo import TYPES  # noqa: PLC0415
    from events.keys import create_api_key  # noqa: PLC0415
    from events.models import EventType, Source  # noqa: PLC0415

    source, key = bench_source()
    with connection.cursor() as cursor:  # the COPY reference's rows point at real customers
        cursor.execute("INSERT INTO customers_customer (external_id, email, display_name) "
                       "SELECT 'ref_' || n, '', '' FROM generate_series(1, 1000) AS n")  # fmt: skip
    connection.close()

    copy_rate = copy_reference(url, args.copy_rows)
    workdir = Path(tempfile.mkdtemp(prefix="auditsvc-bench-"))
    endpoint = f"http://127.0.0.1:{PORT}/api/v1/events"
    single_bodies = event_bodies(2000, None)
    # The references run before and after the service's phases, and the better run of each
    # counts: this machine's noise comes in bursts, and a reference slowed by one would flatter
    # every ratio against it.
    references: dict[str, list[dict[str, Any]]] = {"trivial": [], "bare": []}

    def measure_references() -> None:
        for name, environment in (("trivial", {}), ("bare", {"BENCH_BARE": "1"})):
            with gunicorn(PORT, workers=WORKERS, threads=THREADS, app="bench.trivial_wsgi", environment=environment):
                references[name].append(
                    wrk(endpoint, single_bodies, seconds=args.seconds, connections=16, key=key, workdir=workdir)
                )

    measure_references()
    with gunicorn(PORT, workers=WORKERS, threads=THREADS):
        single = wrk(endpoint, single_bodies, seconds=args.seconds, connections=16, key=key, workdir=workdir)
        batch100 = wrk(endpoint, event_bodies(40, 100), seconds=args.seconds, connections=4, key=key, workdir=workdir)
        batch1000 = wrk(endpoint, event_bodies(8, 1000), seconds=args.seconds, connections=4, key=key, workdir=workdir)
    # The same batches with every type's payload checked against a realistic schema (enforce).
    from events import schema_registry  # noqa: PLC0415
    from events.demo import payload_schema  # noqa: PLC0415

    for event_type in EventType.objects.filter(name__in=TYPES):
        schema_registry.register_schema(
            type_name=event_type.name, schema=payload_schema(), actor="bench", validation="enforce"
        )
    connection.close()
    with gunicorn(PORT, workers=WORKERS, threads=THREADS):
        enforced = wrk(endpoint, event_bodies(8, 1000), seconds=args.seconds, connections=4, key=key, workdir=workdir)
    EventType.objects.filter(name__in=TYPES).update(validation="off")
    connection.close()

    stream_source = Source.objects.create(slug="bench-stream", name="Benchmark, stream mode")
    stream_key = create_api_key(source=stream_source, scopes=["ingest"]).plaintext
    connection.close()
    streamed = bench_stream.measure(url=url, port=PORT, key=stream_key, source_id=stream_source.pk,
                                    bodies=single_bodies, seconds=args.seconds, workers=WORKERS, threads=THREADS,
                                    workdir=workdir)  # fmt: skip
    measure_references()
    cpu = cpu_per_event(url, workdir)
    trivial, bare = (max(references[name], key=lambda run: run["requests"] / run["seconds"]) for name in references)
    runs = {name: " and ".join(f"{run['requests'] / run['seconds']:,.0f}" for run in references[name])
            for name in references}  # fmt: skip

    acked = single["keys"] + batch100["keys"] + batch1000["keys"] + enforced["keys"]
    with psycopg.connect(url) as db:
        stored: dict[str, int] = dict(db.execute(
            "SELECT idempotency_key, count(*) FROM events_event WHERE source_id = %s GROUP BY 1", [source.pk]
        ).fetchall())  # fmt: skip
    missing = [k for k in acked if k not in stored]
    duplicated = [k for k, n in stored.items() if n > 1]
    trivial_rate = trivial["requests"] / trivial["seconds"]
    bare_rate = bare["requests"] / bare["seconds"]
    accept_rate = streamed["accepted"]["acked"] / streamed["accepted"]["seconds"]
    steady_rate = streamed["steady"]["acked"] / streamed["steady"]["seconds"]
    single_rate = single["acked"] / single["seconds"]
    rate100 = batch100["events"] / batch100["seconds"]
    rate1000 = batch1000["events"] / batch1000["seconds"]
    rate_enforced = enforced["events"] / enforced["seconds"]
    phases = [*references["trivial"], *references["bare"], single, batch100, batch1000, enforced, streamed["accepted"],
              streamed["steady"]]  # fmt: skip
    rerun = sum(phase["attempts"] - 1 for phase in phases)
    failures = sum(r["failed"] + r["errors"] for r in (single, batch100, batch1000, enforced))
    rows = [
        ("raw COPY into events_event's twin (reference a)", f"{copy_rate:,.0f} events/s", "1.00 (batch ceiling)", ""),
        (f"trivial Django view, c16 (reference b; better of {runs['trivial']})", f"{trivial_rate:,.0f} req/s",
         "1.00 (single ceiling)",
         f"p50 {trivial['p50_ms']:.1f} / p99 {trivial['p99_ms']:.1f}"),
        (f"bare Django view, no middleware, c16 (reference c; better of {runs['bare']})", f"{bare_rate:,.0f} req/s",
         f"{trivial_rate / bare_rate:.2f}: (b) against (c)", f"p50 {bare['p50_ms']:.1f} / p99 {bare['p99_ms']:.1f}"),
        ("single-event POST, c16", f"{single_rate:,.0f} req/s",
         f"{single_rate / bare_rate:.2f} of (c); target ≥ 0.35 of (c); {single_rate / trivial_rate:.2f} of (b)",
         f"p50 {single['p50_ms']:.1f} / p99 {single['p99_ms']:.1f}; target p99 ≤ 25"),
        ("CPU per single event, in-process, 16 threads (commit shared), direct", f"{cpu['direct']:.0f} µs",
         f"target ≤ 150 µs; the bare view {cpu['bare']:.0f} µs", ""),
        ("CPU per single event, in-process, 16 threads, stream (accept only)", f"{cpu['stream']:.0f} µs",
         "target ≤ 100 µs", ""),
        ("batch POST of 100, c4", f"{rate100:,.0f} events/s", f"{rate100 / copy_rate:.2f} of (a)",
         f"p50 {batch100['p50_ms']:.0f} / p99 {batch100['p99_ms']:.0f}"),
        ("batch POST of 1,000, c4", f"{rate1000:,.0f} events/s", f"{rate1000 / copy_rate:.2f} of (a); target ≥ 0.55",
         f"p50 {batch1000['p50_ms']:.0f} / p99 {batch1000['p99_ms']:.0f}"),
        ("batch POST of 1,000, c4, every payload checked against its type's schema (validation=enforce)",
         f"{rate_enforced:,.0f} events/s",
         f"{rate_enforced / rate1000:.2f} of the same without schemas; target ≥ 0.85",
         f"p50 {enforced['p50_ms']:.0f} / p99 {enforced['p99_ms']:.0f}"),
        ("stream mode: single-event POST accepted (202), c16, no drainer", f"{accept_rate:,.0f} req/s",
         f"{accept_rate / bare_rate:.2f} of (c); target ≥ 0.50 of (c); {accept_rate / trivial_rate:.2f} of (b)",
         f"p50 {streamed['accepted']['p50_ms']:.1f} / p99 {streamed['accepted']['p99_ms']:.1f}; target p99 ≤ 15"),
        (f"stream mode: drain ({bench_stream.DRAINERS} drainer processes, batches of 1,000)", f"{streamed['drain_rate']:,.0f} events/s",
         f"{streamed['drain_rate'] / streamed['drain_copy_rate']:.2f} of a raw COPY of the same "
         f"{streamed['copied_rows']:,} rows ({streamed['drain_copy_rate']:,.0f} events/s); target ≥ 0.50",
         f"{streamed['drained']:,} events"),
        ("stream mode: accepted with a drainer running, c16", f"{steady_rate:,.0f} req/s",
         f"{steady_rate / trivial_rate:.2f} of (b)",
         f"p99 {streamed['steady']['p99_ms']:.1f}; end-to-end lag p50 {streamed['lag_p50']:.2f} s, "
         f"max {streamed['lag_max']:.2f} s; caught up {streamed['catch_up_seconds']:.1f} s after the load"),
    ]  # fmt: skip
    check = (f"Acknowledged {len(acked):,} events ({single['acked']:,} single, {batch100['acked']:,} + "
             f"{batch1000['acked']:,} + {enforced['acked']:,} batches); missing from the database: **{len(missing)}**; stored twice: "
             f"**{len(duplicated)}**; non-2xx or socket errors: {failures}. Stream mode: acknowledged "
             f"{streamed['acknowledged']:,}, missing after the drain **{streamed['missing']}**, stored twice "
             f"**{streamed['duplicated']}**. Load phases made again because one gunicorn worker held over three "
             f"quarters of wrk's connections: {rerun}.")  # fmt: skip
    with psycopg.connect(url) as db:
        version = db.execute("SELECT version()").fetchone()[0].split(" on ")[0]  # type: ignore[index]
    report = "\n".join([
        f"### Ingest, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `make bench` (= `.venv/bin/python -m bench.ingest --seconds {args.seconds}`"
        f"{' with DATABASE_URL=' + os.environ.get('BENCH_BASE_URL', '') if os.environ.get('BENCH_BASE_URL') else ''}); "
        f"{version}; gunicorn {WORKERS} gthread workers × {THREADS} threads, production settings; load from wrk "
        f"(2 threads, keep-alive) on 127.0.0.1, ~400-byte events with fresh idempotency keys; latencies in ms.",
        "",
        "| measurement | rate | ratio | latency |",
        "| --- | ---: | --- | --- |",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        check,
    ])  # fmt: skip
    shutil.rmtree(workdir, ignore_errors=True)
    publish(report, to_docs=not args.no_docs)
    if missing or duplicated or streamed["missing"] or streamed["duplicated"]:
        sys.exit("acknowledged events are missing or duplicated")


if __name__ == "__main__":
    main()

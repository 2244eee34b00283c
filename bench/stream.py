"""Stream mode in `make bench` (called by bench.ingest, same run, same references).

1. a redis-server of its own (AOF, appendfsync always: what stream mode demands), temporary;
2. gunicorn in stream mode, wrk single-event POSTs at c16 with no drainer: the accept rate;
3. the drain of what was accepted, by BENCH_DRAINERS (2) drainer processes at once, as
   `drain_events --once` side by side: the drain rate, against a raw COPY of the very rows
   stored, into a twin of events_event (same indexes);
4. steady load with a drainer running beside it: the accept rate then, and the end-to-end lag
   (the age of the oldest undrained event, sampled from /readyz every 0.25 s);
5. every acknowledged id is in the table exactly once.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import psycopg
import redis

from bench.redis_server import redis_server
from bench.server import gunicorn

ROOT = Path(__file__).resolve().parent.parent
# Drainer processes at once on the one shard (a consumer group shares the entries): one per
# core, and while one waits on PostgreSQL's COPY and commit the other decodes its batch.
DRAINERS = int(os.environ.get("BENCH_DRAINERS", "2"))


def _lag_sampler(port: int, stop: threading.Event, samples: list[float]) -> None:
    while not stop.wait(0.25):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                samples.append(float(orjson.loads(answer.read())["lag"]["oldest_seconds"]))
        except OSError:
            pass


def _drain_in_child(stream_url: str, index: int, results: Any) -> None:
    from django.conf import settings  # noqa: PLC0415
    from django.db import connections  # noqa: PLC0415

    from events.ingest import stream  # noqa: PLC0415
    from events.ingest.drain import Drainer  # noqa: PLC0415

    connections.close_all()  # the parent's connections are not this process's to use
    settings.AUDITSVC_INGEST_MODE, settings.AUDITSVC_STREAM_URL = "stream", stream_url
    stream.forget_client()
    results.put(Drainer(batch=1000, consumer=f"bench-{index}").run(once=True).stored)
    connections.close_all()


def _drain_once(stream_url: str) -> tuple[int, float]:
    """(events stored, seconds) by DRAINERS drainer processes at once, forked from this one so
    that the figure is the drain itself, not a command's start-up: as `drain_events --once`
    run DRAINERS times side by side (a consumer group shares one shard's entries)."""
    from django.db import connections  # noqa: PLC0415

    connections.close_all()
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    children = [context.Process(target=_drain_in_child, args=(stream_url, n, results)) for n in range(DRAINERS)]
    started = time.perf_counter()
    for child in children:
        child.start()
    stored = sum(results.get(timeout=600) for _ in children)
    elapsed = time.perf_counter() - started
    for child in children:
        child.join()
    return stored, elapsed


def _copy_of_stored_rows(url: str, source_id: int) -> tuple[int, float]:
    """Events/s of a raw COPY of the rows the drainer stored, into a twin of events_event."""
    from bench.ingest import timed_copy  # noqa: PLC0415
    from events.ingest.copy import EVENT_COLUMNS  # noqa: PLC0415

    with psycopg.connect(url, autocommit=True) as connection:
        rows = connection.execute(
            f"SELECT {EVENT_COLUMNS} FROM events_event WHERE source_id = %s",  # noqa: S608 - a constant
            [source_id],
        ).fetchall()
        shaped = [(*row[:8], orjson.dumps(row[8]).decode(), *row[9:]) for row in rows]
        connection.execute("DROP TABLE IF EXISTS drain_reference")
        connection.execute("CREATE TABLE drain_reference (LIKE events_event INCLUDING ALL)")
        elapsed = timed_copy(connection, "drain_reference", shaped)
        connection.execute("DROP TABLE drain_reference")
    return len(rows), len(rows) / elapsed


def measure(*, url: str, port: int, key: str, source_id: int, bodies: list[str], seconds: int,
            workers: int, threads: int, workdir: Path) -> dict[str, Any]:  # fmt: skip
    """The stream-mode figures; raises SystemExit if an acknowledged event is lost or doubled."""
    from bench.ingest import wrk  # noqa: PLC0415
    from events.ingest.stream import stream_key  # noqa: PLC0415

    redis_dir = Path(tempfile.mkdtemp(prefix="auditsvc-bench-redis-"))
    endpoint = f"http://127.0.0.1:{port}/api/v1/events"
    try:
        with redis_server(redis_dir) as server:
            stream_env = {"AUDITSVC_INGEST_MODE": "stream", "AUDITSVC_STREAM_URL": server.url}
            with gunicorn(port, workers=workers, threads=threads, environment=stream_env):
                accepted = wrk(endpoint, bodies, seconds=seconds, connections=16, key=key, workdir=workdir)
                drained, drain_seconds = _drain_once(server.url)
                drainer = subprocess.Popen([sys.executable, "manage.py", "drain_events"], cwd=ROOT,
                                           env={**os.environ, **stream_env}, stdout=subprocess.DEVNULL)  # fmt: skip
                samples: list[float] = []
                stop = threading.Event()
                sampler = threading.Thread(target=_lag_sampler, args=(port, stop, samples))
                sampler.start()
                steady = wrk(endpoint, bodies, seconds=seconds, connections=16, key=key, workdir=workdir)
                stop.set()
                sampler.join()
                caught_up = time.perf_counter()
                while redis.Redis(port=server.port).xlen(stream_key(0)):
                    time.sleep(0.05)
                catch_up_seconds = time.perf_counter() - caught_up
                drainer.terminate()
                drainer.wait(30)
    finally:
        shutil.rmtree(redis_dir, ignore_errors=True)
    ids = [k.removeprefix("id:") for k in accepted["keys"] + steady["keys"]]
    with psycopg.connect(url) as db:
        stored: dict[str, int] = {
            str(event_id): n
            for event_id, n in db.execute(
                "SELECT id, count(*) FROM events_event WHERE source_id = %s GROUP BY 1", [source_id]
            ).fetchall()
        }
    copied, copy_rate = _copy_of_stored_rows(url, source_id)
    return {
        "accepted": accepted,
        "steady": steady,
        "drained": drained,
        "drain_rate": drained / drain_seconds,
        "drain_copy_rate": copy_rate,
        "copied_rows": copied,
        "lag_p50": statistics.median(samples) if samples else 0.0,
        "lag_max": max(samples, default=0.0),
        "catch_up_seconds": catch_up_seconds,
        "acknowledged": len(ids),
        "missing": len([i for i in ids if i not in stored]),
        "duplicated": len([i for i, n in stored.items() if n > 1]),
    }

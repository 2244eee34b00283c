"""gunicorn (gthread) against granian (Rust HTTP, WSGI) under one process and thread budget, alternating.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/auditsvc_granian .venv/bin/python -m bench.servers_ab \\
        [--seconds 12] [--rounds 4] [--read-events 20000] [--no-docs]

Both serve auditsvc.wsgi:application with production settings (DEBUG=false, direct mode) from 2
worker processes, each calling the application from 8 threads: gunicorn's gthread workers with 8
threads (gunicorn.conf.py, bench.server.gunicorn), granian's `--workers 2 --blocking-threads 8
--runtime-threads 1` (one Rust thread per worker does the sockets, as gunicorn's main thread does).
Worker recycling is off in both while measuring (GUNICORN_MAX_REQUESTS=0; granian recycles by
lifetime only, left unset): one recycles by request count, the other by time, and a restart inside
a 12 s run would measure the restart. Per round, gunicorn then granian, each through:
(a) single-event POST /api/v1/events at c16, (b) batches of 100 at c4 (both on a fresh database
that only they write to); (c) GET /api/v1/events?page_size=100 at c1 and c4 on a second database
holding --read-events events (read scope; each read is itself recorded, as in production);
(d) bench.trivial_wsgi (the trivial Django view) and the same with BENCH_BARE=1 (no middleware)
at c16. Every acknowledged key is checked stored exactly once. Per-round rates, p99, and the
median granian/gunicorn ratio per phase; appended to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.drain_ab import _shell
from bench.ingest import _connections_per_process, event_bodies, fresh_database, wrk
from bench.ingest_ab import MAKE_KEY, stored_once
from bench.report import publish
from bench.server import granian, gunicorn

ROOT = Path(__file__).resolve().parent.parent
PORT = 8768
WORKERS, THREADS = 2, 8
SERVERS = ("gunicorn", "granian")
# Phases by the server instance that runs them: (instance, phase, what, connections, unit).
PHASES = (
    ("writes", "single", "single-event POST", 16, "events/s"),
    ("writes", "batch100", "batch POST of 100", 4, "events/s"),
    ("reads", "read_c1", "GET /api/v1/events?page_size=100", 1, "req/s"),
    ("reads", "read_c4", "GET /api/v1/events?page_size=100", 4, "req/s"),
    ("trivial", "trivial", "trivial Django view (bench.trivial_wsgi)", 16, "req/s"),
    ("bare", "bare", "bare Django view, no middleware (BENCH_BARE=1)", 16, "req/s"),
)
READ_PATH = "/api/v1/events?page_size=100"
MAKE_READ_KEY = """
from events.keys import create_api_key
from events.models import Source
print(create_api_key(source=Source.objects.order_by("id").first(), scopes=["read"], name="servers_ab").plaintext)
"""


def serve(server: str, app: str, environment: dict[str, str]) -> AbstractContextManager[Any]:
    """One server of the pair, the budget the same: WORKERS processes x THREADS application threads."""
    if server == "gunicorn":
        return gunicorn(PORT, workers=WORKERS, threads=THREADS, app=app, environment=environment)
    # A SIGTERM that reaches a granian worker before its own handler is set is lost, and the
    # master then waits for it for ever (docs/BENCHMARKS.md, issue 26 part 2): bounded here.
    return granian(PORT, workers=WORKERS, threads=THREADS, app=app, environment=environment,
                   extra=("--workers-kill-timeout", "20"))  # fmt: skip


def wrk_get(path: str, *, seconds: int, connections: int, key: str) -> dict[str, Any]:
    """wrk with bench/wrk/get.lua; run again (up to three times) when one worker holds over three
    quarters of the connections, as bench.ingest.wrk does for POSTs."""
    for attempt in range(1, 4):
        command = ["wrk", "-t1" if connections == 1 else "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout",
                   "10s", "-s", str(ROOT / "bench" / "wrk" / "get.lua"), f"http://127.0.0.1:{PORT}{path}", "--", path]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "AUDITSVC_BENCH_KEY": key})  # fmt: skip
        time.sleep(min(1.0, seconds / 3))
        spread = _connections_per_process(PORT)
        stdout, stderr = process.communicate()
        if process.returncode:
            raise subprocess.CalledProcessError(process.returncode, command, stdout, stderr)
        line = next(line for line in stdout.splitlines() if line.startswith("RESULT "))
        result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
        result["connections_per_worker"] = spread
        balanced = not spread or max(spread) <= max(1, math.ceil(0.75 * sum(spread)))
        if balanced or attempt == 3:
            result["attempts"] = attempt
            return result
    raise AssertionError("unreachable")


def prepare(read_events: int) -> dict[str, dict[str, str]]:
    """The two databases (writes: empty, with an ingest key; reads: read_events events, with a read
    key), as {instance: environment} plus each one's key under "key"."""
    base_env = {**os.environ, "DEBUG": "false", "AUDITSVC_INGEST_MODE": "direct", "GUNICORN_MAX_REQUESTS": "0",
                "DJANGO_SETTINGS_MODULE": "auditsvc.settings"}  # fmt: skip
    base_env.pop("REDIS_URL", None)
    envs = {}
    for instance, script in (("writes", MAKE_KEY), ("reads", MAKE_READ_KEY)):
        env = {**base_env, "DATABASE_URL": fresh_database(f"servers_ab_{instance}")}
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        if instance == "reads":
            subprocess.run([sys.executable, "-m", "bench.load_events", "--count", str(read_events), "--received-now"],
                           cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        made = subprocess.run([sys.executable, "-c", _shell(script)], cwd=ROOT, env=env, check=True,
                              capture_output=True, text=True)  # fmt: skip
        envs[instance] = {**env, "key": made.stdout.split()[-1]}
    envs["trivial"] = {**base_env, "DATABASE_URL": envs["writes"]["DATABASE_URL"], "key": "unused"}
    envs["bare"] = {**envs["trivial"], "BENCH_BARE": "1"}
    return envs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--read-events", type=int, default=20_000)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from bench.django_setup import setup  # noqa: PLC0415 - events.demo needs Django's apps

    setup()
    envs = prepare(args.read_events)
    bodies = {"single": event_bodies(2000, None), "batch100": event_bodies(40, 100)}
    apps = {"writes": "auditsvc.wsgi", "reads": "auditsvc.wsgi", "trivial": "bench.trivial_wsgi",
            "bare": "bench.trivial_wsgi"}  # fmt: skip
    results: dict[str, dict[str, list[dict[str, Any]]]] = {p: {s: [] for s in SERVERS} for _, p, *_ in PHASES}
    acked: list[str] = []
    with tempfile.TemporaryDirectory(prefix="servers-ab-") as scratch:
        for round_ in range(args.rounds):
            for server in SERVERS:
                for instance, run_phase in _instances(args, bodies, envs, Path(scratch)):
                    env = {k: v for k, v in envs[instance].items() if k != "key"}
                    with serve(server, apps[instance], env):
                        time.sleep(3)  # /healthz answered: let the other worker finish booting too
                        for phase, result in run_phase():
                            results[phase][server].append(result)
                            acked.extend(result.get("keys", []))
                            result.pop("keys", None)
            print(f"round {round_ + 1}: " + ", ".join(
                f"{p} {_rate(results[p]['granian'][-1], u) / _rate(results[p]['gunicorn'][-1], u):.2f}"
                for _, p, _, _, u in PHASES), flush=True)  # fmt: skip
    url = envs["writes"]["DATABASE_URL"]
    with psycopg.connect(url) as db:
        stored = db.execute("SELECT count(*) FROM events_event WHERE idempotency_key = ANY(%s)", [acked]).fetchone()
        version = db.execute("SELECT version()").fetchone()[0].split(" on ")[0]  # type: ignore[index]
    once = stored_once(url, acked)
    report(args, results, acked=len(acked), stored=stored[0] if stored else 0, once=once, version=version)
    if not once:
        sys.exit("acknowledged events are missing or stored twice")


def _instances(
    args: argparse.Namespace, bodies: dict[str, list[str]], envs: dict[str, dict[str, str]], scratch: Path
) -> Iterator[tuple[str, Callable[[], Iterator[tuple[str, dict[str, Any]]]]]]:
    """(instance, the phases it runs) in order; each phase yields (phase, wrk's result)."""
    endpoint = f"http://127.0.0.1:{PORT}/api/v1/events"

    def posts(instance: str) -> Callable[[], Iterator[tuple[str, dict[str, Any]]]]:
        def run() -> Iterator[tuple[str, dict[str, Any]]]:
            for owner, phase, _, connections, _ in PHASES:
                if owner == instance:
                    chosen = bodies["batch100" if phase == "batch100" else "single"]
                    yield phase, wrk(endpoint, chosen, seconds=args.seconds, connections=connections,
                                     key=envs[instance]["key"], workdir=scratch)  # fmt: skip

        return run

    def reads() -> Iterator[tuple[str, dict[str, Any]]]:
        for owner, phase, _, connections, _ in PHASES:
            if owner == "reads":
                yield phase, wrk_get(READ_PATH, seconds=args.seconds, connections=connections, key=envs["reads"]["key"])

    yield "writes", posts("writes")
    yield "reads", reads
    yield "trivial", posts("trivial")
    yield "bare", posts("bare")


def _rate(result: dict[str, Any], unit: str) -> float:
    counted = result["events"] if unit == "events/s" else result["acked"]
    return float(counted) / float(result["seconds"])


def report(
    args: argparse.Namespace,
    results: dict[str, dict[str, list[dict[str, Any]]]],
    *,
    acked: int,
    stored: int,
    once: bool,
    version: str,
) -> None:
    sections, summary = [], []
    for _, phase, what, connections, unit in PHASES:
        runs = results[phase]
        ratios = [_rate(b, unit) / _rate(a, unit) for a, b in zip(runs["gunicorn"], runs["granian"], strict=True)]
        rows = "\n".join(
            f"| {n + 1} | {_rate(a, unit):,.0f} | {a['p99_ms']:.1f} | {_rate(b, unit):,.0f} | {b['p99_ms']:.1f} | "
            f"{ratio:.2f} |"
            for n, (a, b, ratio) in enumerate(zip(runs["gunicorn"], runs["granian"], ratios, strict=True))
        )
        failures = sum(r["failed"] + r["errors"] for s in SERVERS for r in runs[s])
        reruns = sum(r["attempts"] - 1 for s in SERVERS for r in runs[s])
        medians = {s: statistics.median(_rate(r, unit) for r in runs[s]) for s in SERVERS}
        p99s = {s: statistics.median(r["p99_ms"] for r in runs[s]) for s in SERVERS}
        summary.append(
            f"| {what}, c{connections} | {medians['gunicorn']:,.0f} {unit} | {medians['granian']:,.0f} {unit} | "
            f"{p99s['gunicorn']:.1f} / {p99s['granian']:.1f} | **{statistics.median(ratios):.2f}** "
            f"({min(ratios):.2f}-{max(ratios):.2f}) |"
        )
        sections.append(f"""{what} at {connections} connection{"s" if connections > 1 else ""} ({unit}; p99 in ms;
non-2xx or socket errors {failures}; runs made again for an unbalanced spread {reruns}):

| round | gunicorn | p99 | granian | p99 | granian/gunicorn |
| --- | ---: | ---: | ---: | ---: | ---: |
{rows}
""")
    text = f"""
## gunicorn against granian (issue 26, part 2), alternating ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)

`DATABASE_URL=postgres://postgres@127.0.0.1:5432/auditsvc_granian .venv/bin/python -m bench.servers_ab --seconds {args.seconds} --rounds {args.rounds} --read-events {args.read_events}`;
{version}; both servers {WORKERS} worker processes × {THREADS} application threads (gunicorn gthread
`--threads {THREADS}` with gunicorn.conf.py; granian 2.8 `--interface wsgi --workers {WORKERS} --blocking-threads {THREADS}
--runtime-threads 1`), production settings, recycling off while measuring; per round gunicorn then granian;
wrk (keep-alive) on 127.0.0.1; reads on a database of {args.read_events:,} events.

| phase | gunicorn (median) | granian (median) | p99 ms (median), gunicorn / granian | granian/gunicorn, median of rounds (range) |
| --- | ---: | ---: | --- | --- |
{chr(10).join(summary)}

Acknowledged {acked:,} events (single and batch phases); rows stored under those keys: {stored:,};
each stored exactly once: **{"yes" if once else "NO"}**.

""" + "\n".join(sections)
    publish(text, to_docs=not args.no_docs)


if __name__ == "__main__":
    main()

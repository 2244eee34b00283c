"""Where a single-event POST spends its CPU, stage by stage, under the benchmark's own load.

    .venv/bin/python -m bench.profile_request [--mode direct|stream] [--seconds 10]

Runs gunicorn (bench settings: 2 workers x 8 threads, production settings) on a fresh
benchmark database, drives it with wrk at 16 connections, and samples one worker with py-spy
(`--gil`: only the thread holding the GIL, which is what a worker's throughput is bound by).
Each sample goes to the innermost stage its stack passes through. Needs wrk and py-spy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.server import worker_pids

ROOT = Path(__file__).resolve().parent.parent
PORT = 8767
# (stage, what a frame's file path contains), most specific first: a sample counts for the
# first stage its stack passes through (the view's work inside DRF inside the middleware is the
# view's; the generic Django and gunicorn stages take only what nothing narrower explains).
STAGES = [
    ("Redis client (stream append)", "redis/"),
    ("PostgreSQL client and ORM", "psycopg/"),
    ("hashing (RFC 8785 + SHA-256)", "events/integrity/"),
    ("validation", "events/ingest/validation.py"),
    ("group commit, write path", "events/ingest/"),
    ("reading the body", "auditsvc/api/request_body.py"),
    ("authentication (API key)", "auditsvc/api/authentication.py"),
    ("authentication (API key)", "events/keys.py"),
    ("throttling", "auditsvc/api/throttling.py"),
    ("throttling", "django/core/cache/"),
    ("permissions", "auditsvc/api/permissions.py"),
    ("rendering the answer", "auditsvc/api/renderers.py"),
    ("rendering the answer", "rest_framework/response.py"),
    ("rendering the answer", "django/template/"),
    ("the accept path", "events/api/accept.py"),
    ("the view's own code", "events/api/"),
    ("DRF dispatch (request, negotiation, finalize)", "rest_framework/"),
    ("Django middleware", "middleware"),
    ("Django middleware", "whitenoise/"),
    ("Django middleware", "axes/"),
    ("Django request handling (URL resolving, WSGI)", "django/"),
    ("gunicorn (HTTP parsing, sockets, threads)", "gunicorn/"),
]


def stage_of(stack: list[str]) -> str:
    for stage, marker in STAGES:
        if any(marker in frame for frame in stack):
            return stage
    return "other (interpreter, stdlib)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["direct", "stream"], default="stream")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists() or not shutil.which("wrk"):
        sys.exit("needs wrk (apt-get install wrk) and py-spy (pip install py-spy)")
    from bench.ingest import event_bodies, fresh_database, wrk  # noqa: PLC0415
    from bench.redis_server import redis_server  # noqa: PLC0415
    from bench.server import gunicorn  # noqa: PLC0415

    os.environ["DATABASE_URL"] = fresh_database()
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
    from bench.django_setup import setup  # noqa: PLC0415

    setup()
    from events.keys import create_api_key  # noqa: PLC0415
    from events.models import Source  # noqa: PLC0415

    key = create_api_key(source=Source.objects.create(slug="profile", name="Profile"), scopes=["ingest"]).plaintext
    workdir = Path(tempfile.mkdtemp(prefix="auditsvc-profile-"))
    raw = workdir / "profile.txt"
    with redis_server(workdir) as stream_redis:  # used in stream mode only
        environment = {"AUDITSVC_INGEST_MODE": args.mode, "AUDITSVC_STREAM_URL": stream_redis.url}
        with gunicorn(PORT, workers=args.workers, threads=args.threads, environment=environment) as master:
            worker = worker_pids(master.pid)[0]
            spy = subprocess.Popen([py_spy, "record", "--gil", "--nonblocking", "-r", "250", "-d", str(args.seconds),
                                    "-f", "raw", "-o", str(raw), "-p", str(worker)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
            time.sleep(0.5)
            top = subprocess.Popen(["top", "-b", "-d", "3", "-n", "2", "-w", "200"], stdout=subprocess.PIPE, text=True)
            result = wrk(f"http://127.0.0.1:{PORT}/api/v1/events", event_bodies(2000, None), seconds=args.seconds,
                         connections=16, key=key, workdir=workdir)  # fmt: skip
            spy.wait(60)
            usage = top.communicate()[0].split("top - ")[-1]
    stages: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        stages[stage_of(stack.split(";"))] += int(count)
    total = sum(stages.values())
    rate = result["acked"] / result["seconds"]
    print(f"{args.mode} mode: {rate:,.0f} req/s at c16, p99 {result['p99_ms']:.1f} ms; "
          f"{total:,} GIL-holding samples of one worker at 250 Hz over {args.seconds} s")  # fmt: skip
    print("| stage | share of the worker's GIL time |")
    print("| --- | ---: |")
    for stage, samples in stages.most_common():
        print(f"| {stage} | {100 * samples / total:.1f} % |")
    print("\nCPU while loaded (top, 3 s):")
    print("\n".join(line for line in usage.splitlines()[:16] if line.strip()))
    shutil.copy(raw, Path(tempfile.gettempdir()) / f"auditsvc-profile-{args.mode}.txt")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Python CPU per event in stream mode, accept and drain, and where it goes (pyinstrument).

    .venv/bin/python -m bench.profile_stream [--events 20000]

In-process against DATABASE_URL (or the embedded database) and a redis-server of its own
(AOF always): what a single-event POST runs after the body is read (parse, validate,
events.ingest.stream.accept_event), then what the drainer runs (Drainer.run(once=True)).
CPU time is process time: Redis's and PostgreSQL's own work is excluded.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import orjson

from bench.django_setup import setup
from bench.redis_server import redis_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    setup()
    from django.conf import settings  # noqa: PLC0415
    from pyinstrument import Profiler  # noqa: PLC0415

    from events.demo import Corpus  # noqa: PLC0415
    from events.ingest import stream  # noqa: PLC0415
    from events.ingest.drain import Drainer  # noqa: PLC0415
    from events.ingest.validation import parse_ingest_body  # noqa: PLC0415
    from events.models import Source  # noqa: PLC0415

    directory = Path(tempfile.mkdtemp(prefix="auditsvc-profile-redis-"))
    try:
        with redis_server(directory) as server:
            settings.AUDITSVC_INGEST_MODE = "stream"
            settings.AUDITSVC_STREAM_URL = server.url
            settings.AUDITSVC_STREAM_PREFIX = f"profile{time.time_ns()}"
            stream.ensure_groups()
            corpus = Corpus(seed=5)
            bodies = [orjson.dumps({**corpus.event(with_time=False), "idempotency_key": f"p-{n}"})
                      for n in range(args.events)]  # fmt: skip
            source, _ = Source.objects.get_or_create(slug="profile", defaults={"name": "Profile"})
            for phase, work in (
                (
                    "accept",
                    lambda: [stream.accept_event(source=source, item=parse_ingest_body(b).events[0]) for b in bodies],
                ),
                ("drain", lambda: Drainer(batch=1000).run(once=True)),
            ):
                profiler = Profiler(interval=0.0005)
                cpu, wall = time.process_time(), time.perf_counter()
                profiler.start()
                work()
                profiler.stop()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                print(f"## {phase}: Python CPU {cpu / args.events * 1e6:.1f} µs per event, wall "
                      f"{wall / args.events * 1e6:.1f} µs ({args.events} events; under the profiler)")  # fmt: skip
                print(profiler.output_text(unicode=False, color=False, show_all=False, timeline=False)[:5000])
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()

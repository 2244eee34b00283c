"""Python CPU per stored event on the batch path, and where it goes (pyinstrument).

    .venv/bin/python -m bench.profile_batch [--batches 20]

Runs what a batch POST of 1,000 events runs after the body is read: parse and validate
(events.ingest.validation.parse_ingest_body), then events.ingest.ingest_events (ids, hashes, bulk
upserts, COPY), then the response rendering, in-process against DATABASE_URL (or the
embedded database). CPU time is process time, so the database's own work is excluded.
"""

from __future__ import annotations

import argparse
import time

import orjson

from bench.django_setup import setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    setup()
    from pyinstrument import Profiler  # noqa: PLC0415

    from events.api.serializers import event_output  # noqa: PLC0415
    from events.demo import Corpus  # noqa: PLC0415
    from events.ingest.validation import parse_ingest_body  # noqa: PLC0415
    from events.ingest.write import ingest_events  # noqa: PLC0415
    from events.models import Source  # noqa: PLC0415

    corpus = Corpus(seed=31)
    run = f"profile{time.time_ns()}"
    bodies = [
        orjson.dumps(
            {"events": [{**corpus.event(with_time=False), "idempotency_key": f"{run}-{b}-{i}"} for i in range(1000)]}
        )
        for b in range(2 * args.batches + 1)
    ]
    source, _ = Source.objects.get_or_create(slug="profile", defaults={"name": "Profile"})

    def one(body: bytes) -> None:
        result = ingest_events(source=source, items=parse_ingest_body(body).events)
        orjson.dumps({"events": [event_output(e) for e in result.events]})

    one(bodies[0])  # warm the type and customer caches
    cpu, wall = time.process_time(), time.perf_counter()
    for body in bodies[1 : args.batches + 1]:  # measured without the profiler
        one(body)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    events = args.batches * 1000
    print(f"Python CPU per stored event: {cpu / events * 1e6:.1f} µs (wall {wall / events * 1e6:.1f} µs; "
          f"{events} events in batches of 1,000; the profile below is a second, separate pass)")  # fmt: skip
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for body in bodies[args.batches + 1 :]:
        one(body)
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False, show_all=False, timeline=False)[:6000])


if __name__ == "__main__":
    main()

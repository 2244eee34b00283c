"""CloudEvents and protected fields against the native write path, in one run.

    .venv/bin/python -m bench.cloudevents_privacy [--seconds 15] [--no-docs]

On a fresh database (as bench.ingest), under the same gunicorn setup and wrk load, in turn and
ROUNDS times over (the table grows, and each phase meets the sizes its reference met):
1. native batch POST of 1,000 (reference a) and single-event POST at concurrency 16 (b);
2. the same events as CloudEvents: batch mode (application/cloudevents-batch+json) and
   structured mode (application/cloudevents+json);
3. the native batches with every type's schema marking two fields personal (AES-GCM under
   the customer's data key) and one sensitive (HMAC), validation off;
every acknowledged event is checked to be stored once; appended to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.ingest import PORT, THREADS, WORKERS, bench_source, event_bodies, migrated_database, wrk
from bench.report import publish

ROUNDS = 2
CE_BATCH = "application/cloudevents-batch+json"
CE_STRUCTURED = "application/cloudevents+json"


def as_cloudevent(event: dict[str, Any]) -> dict[str, Any]:
    """A native event body (events.demo's) as the CloudEvent a service would send for it."""
    document = {"specversion": "1.0", "id": event["idempotency_key"], "source": "/bench/eu-1", "type": event["type"],
                "data": event.get("payload", {})}  # fmt: skip
    for native, attribute in (("customer", "subject"), ("actor", "actor"), ("description", "description")):
        if event.get(native) is not None:
            document[attribute] = event[native]
    return document


def cloudevent_bodies(native: list[str], *, batch: bool) -> list[str]:
    bodies = []
    for body in native:
        parsed = json.loads(body)
        if batch:
            bodies.append(json.dumps([as_cloudevent(event) for event in parsed["events"]]))
        else:
            bodies.append(json.dumps(as_cloudevent(parsed)))
    return bodies


def marked_schema(payload_schema: dict[str, Any]) -> dict[str, Any]:
    """events.demo's schema with two fields personal and one sensitive (all present in its payloads)."""
    properties = dict(payload_schema.get("properties", {}))
    for name, mark in (("email", "personal"), ("ip", "personal"), ("card_fingerprint", "sensitive")):
        properties[name] = {"type": "string", "x-auditsvc": mark}
    return {**payload_schema, "properties": properties}


def with_marked_fields(native: list[str]) -> list[str]:
    """The batches with the marked fields added to every payload (and every event given a customer)."""
    bodies = []
    for number, body in enumerate(native):
        parsed = json.loads(body)
        for index, event in enumerate(parsed["events"]):
            event["customer"] = event.get("customer") or f"cus_{(number * 1000 + index) % 5000}"
            event.setdefault("payload", {}).update(
                email=f"person{index}@example.com", ip=f"203.0.113.{index % 250}", card_fingerprint=f"fp_{index:08x}"
            )
        bodies.append(json.dumps(parsed))
    return bodies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=15, help="duration of each load phase")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    url = migrated_database()
    from django.db import connection, transaction  # noqa: PLC0415

    from bench.server import gunicorn  # noqa: PLC0415
    from events import privacy_generation, schema_registry  # noqa: PLC0415
    from events.demo import TYPES, payload_schema  # noqa: PLC0415
    from events.models import EventSchema, EventType  # noqa: PLC0415

    source, key = bench_source()
    workdir = Path(tempfile.mkdtemp(prefix="auditsvc-bench-"))
    endpoint = f"http://127.0.0.1:{PORT}/api/v1/events"
    batches, singles = event_bodies(8, 1000), event_bodies(2000, None)

    def load(bodies: list[str], connections: int, content_type: str = "application/json") -> dict[str, Any]:
        os.environ["AUDITSVC_BENCH_CONTENT_TYPE"] = content_type
        try:
            return wrk(endpoint, bodies, seconds=args.seconds, connections=connections, key=key, workdir=workdir)
        finally:
            del os.environ["AUDITSVC_BENCH_CONTENT_TYPE"]

    ce_batches, ce_singles = cloudevent_bodies(batches, batch=True), cloudevent_bodies(singles, batch=False)
    marked_batches = with_marked_fields(batches)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in ("native", "ce", "marked", "single", "ce_single")}

    def set_marks(on: bool) -> None:
        """Marks on every type (or none), in force in every worker at once (the privacy generation)."""
        if on:
            for event_type in EventType.objects.filter(name__in=TYPES):
                schema_registry.register_schema(
                    type_name=event_type.name, schema=marked_schema(payload_schema()), actor="bench"
                )
        else:
            # wrk has stopped, but gunicorn still commits the batches in flight (p99 over a second):
            # marks removed under them would store them plain, rightly, and count against the run.
            time.sleep(3)
            with transaction.atomic():  # by hand, not a registration: moved as a registration would
                privacy_generation.bump()
                EventSchema.objects.all().delete()
        connection.close()

    # Interleaved, ROUNDS times: the table grows through the run, and each phase must meet the
    # same table sizes as its reference.
    with gunicorn(PORT, workers=WORKERS, threads=THREADS):
        for _ in range(ROUNDS):
            runs["native"].append(load(batches, 4))
            runs["ce"].append(load(ce_batches, 4, CE_BATCH))
            set_marks(True)
            runs["marked"].append(load(marked_batches, 4))
            set_marks(False)
            runs["single"].append(load(singles, 16))
            runs["ce_single"].append(load(ce_singles, 16, CE_STRUCTURED))

    phases = [run for name in runs for run in runs[name]]
    acked = [k for phase in phases for k in phase["keys"]]
    with psycopg.connect(url) as db:
        stored: dict[str, int] = dict(db.execute(
            "SELECT idempotency_key, count(*) FROM events_event WHERE source_id = %s GROUP BY 1", [source.pk]
        ).fetchall())  # fmt: skip
        plain = db.execute("SELECT count(*) FROM events_event WHERE payload->>'email' LIKE 'person%%'").fetchone()
        version = db.execute("SELECT version()").fetchone()[0].split(" on ")[0]  # type: ignore[index]
    missing = [k for k in acked if k not in stored]
    duplicated = [k for k, n in stored.items() if n > 1]

    def rate(name: str, unit: str = "events") -> float:
        return float(sum(run[unit] for run in runs[name]) / sum(run["seconds"] for run in runs[name]))

    def each(name: str, unit: str = "events") -> str:
        return " and ".join(f"{run[unit] / run['seconds']:,.0f}" for run in runs[name])

    def latency(name: str) -> str:
        return " and ".join(f"{run['p50_ms']:.1f} / {run['p99_ms']:.1f}" for run in runs[name])

    batch_rate, single_rate = rate("native"), rate("single", "acked")
    rows = [
        ("(a) native batch POST of 1,000, c4", rate("native"), each("native"), "1.00", latency("native")),
        ("CloudEvents batch mode, 1,000 per request, c4", rate("ce"), each("ce"),
         f"{rate('ce') / batch_rate:.2f} of (a)", latency("ce")),
        ("native batch of 1,000 with 2 personal + 1 sensitive field per event (validation off)", rate("marked"),
         each("marked"), f"{rate('marked') / batch_rate:.2f} of (a)", latency("marked")),
        ("(b) native single-event POST, c16", single_rate, each("single", "acked"), "1.00", latency("single")),
        ("CloudEvents structured mode, one per request, c16", rate("ce_single", "acked"), each("ce_single", "acked"),
         f"{rate('ce_single', 'acked') / single_rate:.2f} of (b)", latency("ce_single")),
    ]  # fmt: skip
    report = "\n".join([
        f"### CloudEvents and protected fields (issue 17), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `.venv/bin/python -m bench.cloudevents_privacy --seconds {args.seconds}`; {version}; gunicorn "
        f"{WORKERS} gthread workers × {THREADS} threads, production settings; wrk on 127.0.0.1; the events of "
        f"`make bench`; {ROUNDS} rounds, each phase once per round in turn; the rate is over all rounds, "
        "each round's in brackets; latencies p50 / p99 in ms per round. Ratios are against the native format "
        "in the same rounds.",
        "",
        "| measurement | rate (each round) | ratio | latency |",
        "| --- | ---: | --- | --- |",
        *[f"| {name} | {value:,.0f} events/s ({rounds}) | {ratio} | {lat} |" for name, value, rounds, ratio, lat in rows],
        "",
        f"Acknowledged {len(acked):,} events; missing from the database: **{len(missing)}**; stored twice: "
        f"**{len(duplicated)}**; stored with a marked e-mail address in plain text: **{plain[0] if plain else '?'}**; "
        f"non-2xx or socket errors: {sum(p['failed'] + p['errors'] for p in phases)}.",
    ])  # fmt: skip
    shutil.rmtree(workdir, ignore_errors=True)
    publish(report, to_docs=not args.no_docs)
    if missing or duplicated:
        sys.exit("acknowledged events are missing or duplicated")


if __name__ == "__main__":
    main()

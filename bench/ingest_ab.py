"""Direct-mode ingest of two commits, alternating in one run: is a change to the write path a loss?

    .venv/bin/python -m bench.ingest_ab [--old 125d5bf] [--new HEAD] [--seconds 12] [--rounds 3] [--no-docs]

make bench measures one commit against references taken in the same run; two such runs, an
hour apart on this machine, differ by more than most changes cost. Here each commit gets a
checkout of its own (git worktree, this .venv) and a database of its own (migrated by that
commit, with a "bench" source and an ingest key made by that commit's code). Then, round after
round, old and new in turn under the same gunicorn settings (2 gthread workers x 8 threads,
production settings, each commit's own gunicorn.conf.py): single-event POSTs at 16 connections
and batches of 1,000 at 4, driven by wrk as in make bench. Every acknowledged key is checked to
be stored exactly once. Each round reports both rates and new/old; appended to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.drain_ab import _shell, ab_arguments, checkout
from bench.ingest import event_bodies, fresh_database, wrk
from bench.report import publish
from bench.server import gunicorn

ROOT = Path(__file__).resolve().parent.parent
PORT = 8767
WORKERS, THREADS = 2, int(os.environ.get("GUNICORN_THREADS", "8"))
PHASES = (("single", None, 16), ("batch1000", 1000, 4))

MAKE_KEY = """
from events.demo import TYPES
from events.keys import create_api_key
from events.models import EventType, Source
source = Source.objects.create(slug="bench", name="Benchmark")
EventType.objects.bulk_create([EventType(name=name) for name in TYPES], ignore_conflicts=True)
print(create_api_key(source=source, scopes=["ingest"]).plaintext)
"""


def stored_once(database_url: str, keys: list[str]) -> bool:
    """Whether every acknowledged key is stored exactly once."""
    with psycopg.connect(database_url) as connection:
        rows = connection.execute(
            "SELECT count(*), count(DISTINCT idempotency_key) FROM events_event WHERE idempotency_key = ANY(%s)",
            [keys],
        ).fetchone()
    return rows is not None and rows[0] == rows[1] == len(set(keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=12)
    args, revs = ab_arguments(parser)
    sys.path.insert(0, str(ROOT))
    from bench.django_setup import setup  # noqa: PLC0415 - events.demo needs Django's apps

    setup()
    bodies = {name: event_bodies(2000 if batch is None else 8, batch) for name, batch, _ in PHASES}
    rates: dict[str, dict[str, list[float]]] = {phase: {"old": [], "new": []} for phase, _, _ in PHASES}
    with tempfile.TemporaryDirectory(prefix="ingest-ab-") as scratch:
        base = Path(scratch)
        trees = {name: checkout(rev, base / name) for name, rev in revs.items()}
        try:
            envs, keys = {}, {}
            for name, tree in trees.items():
                env = {**os.environ, "DATABASE_URL": fresh_database(f"ingest_ab_{name}"), "DEBUG": "false",
                       "WEB_CONCURRENCY": str(WORKERS), "GUNICORN_THREADS": str(THREADS),
                       "AUDITSVC_INGEST_MODE": "direct", "DJANGO_SETTINGS_MODULE": "auditsvc.settings"}  # fmt: skip
                env.pop("REDIS_URL", None)
                subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=tree, env=env, check=True)
                made = subprocess.run([sys.executable, "-c", _shell(MAKE_KEY)], cwd=tree, env=env, check=True,
                                      capture_output=True, text=True)  # fmt: skip
                envs[name], keys[name] = env, made.stdout.split()[-1]
            for round_ in range(args.rounds):
                for name in ("old", "new"):
                    with gunicorn(PORT, workers=WORKERS, threads=THREADS, environment=envs[name], tree=trees[name]):
                        for phase, _, connections in PHASES:
                            result = one_phase(args, base, bodies[phase], connections, key=keys[name], env=envs[name])
                            rates[phase][name].append(result)
                line = ", ".join(f"{phase} new/old {rates[phase]['new'][-1] / rates[phase]['old'][-1]:.2f}"
                                 for phase, _, _ in PHASES)  # fmt: skip
                print(f"round {round_ + 1}: {line}")
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    report(args, revs, rates)


def one_phase(args: argparse.Namespace, base: Path, bodies: list[str], connections: int, *, key: str,
              env: dict[str, str]) -> float:  # fmt: skip
    """Events per second acknowledged in one wrk run; exits if any acknowledged key is not stored once."""
    result: dict[str, Any] = wrk(f"http://127.0.0.1:{PORT}/api/v1/events", bodies, seconds=args.seconds,
                                 connections=connections, key=key, workdir=base)  # fmt: skip
    if result["failed"] or not stored_once(env["DATABASE_URL"], result["keys"]):
        sys.exit(f"a run failed requests ({result['failed']}) or did not store each acknowledged event once")
    return float(result["events"]) / float(result["seconds"])


def report(args: argparse.Namespace, revs: dict[str, str], rates: dict[str, dict[str, list[float]]]) -> None:
    sections = []
    for phase, batch, connections in PHASES:
        ratios = [new / old for old, new in zip(rates[phase]["old"], rates[phase]["new"], strict=True)]
        rows = "\n".join(
            f"| {n + 1} | {old:,.0f} events/s | {new:,.0f} events/s | {ratio:.2f} |"
            for n, (old, new, ratio) in enumerate(zip(rates[phase]["old"], rates[phase]["new"], ratios, strict=True))
        )
        what = "single-event POSTs" if batch is None else f"batches of {batch:,}"
        sections.append(f"""{what} at {connections} connections:

| round | old ({revs["old"]}) | new ({revs["new"]}) | new/old |
| --- | ---: | ---: | ---: |
{rows}

Median new/old: **{statistics.median(ratios):.2f}**.
""")
    text = f"""
## Direct ingest, {revs["old"]} against {revs["new"]}, alternating ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)

`DATABASE_URL=… .venv/bin/python -m bench.ingest_ab --old {args.old} --new {args.new} --seconds {args.seconds} --rounds {args.rounds}`
on this 2-core machine: per round, each commit under its own gunicorn ({WORKERS} gthread workers × {THREADS}
threads, production settings), {args.seconds} s of wrk per phase, old then new; every acknowledged key
checked stored exactly once.

""" + "\n".join(sections)
    publish(text, to_docs=not args.no_docs)


if __name__ == "__main__":
    main()

"""A customer's timeline, page of 100, at one connection: two commits alternating on one database.

    DATABASE_URL=postgres://…/loaded .venv/bin/python -m bench.timeline_ab [--old bd44c1c] [--new HEAD]
        [--seconds 10] [--rounds 5] [--customers 8] [--no-docs]

The database is loaded first (bench.load_events; both commits must share its schema). Each
commit gets a checkout of its own (git worktree, this .venv) and, round after round, old then
new, is served by the same gunicorn settings (bench.server: 2 gthread workers x 4 threads,
production settings, each commit's own gunicorn.conf.py). wrk at one connection and one thread
asks GET /api/v1/customers/{id}/events?page_size=100 of the customers with the most events, in
turn, over a keep-alive connection. Every answer must be a 200, and each commit's first pages
must be byte for byte the other's. Each round reports both rates and new/old; appended to
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench.drain_ab import _shell, ab_arguments, checkout
from bench.report import publish
from bench.server import free_port, gunicorn

ROOT = Path(__file__).resolve().parent.parent
PORT = free_port()  # not a fixed one: on a shared machine another benchmark may hold it
WORKERS, THREADS = 2, 4
PAGE = 100

MAKE_KEY = """
from events.keys import create_api_key
from events.models import Source
print(create_api_key(source=Source.objects.get(slug="billing"), scopes=["read"], name="timeline-ab").plaintext)
"""
ROTATE = """
local paths = {%s}
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
"""


def heaviest_customers(database_url: str, count: int) -> list[tuple[str, int]]:
    """The customers with the most events, and how many each has."""
    with psycopg.connect(database_url) as connection:
        rows = connection.execute(
            "SELECT c.external_id, count(*) FROM events_event e JOIN customers_customer c ON c.id = e.customer_id"
            " GROUP BY c.external_id ORDER BY count(*) DESC LIMIT %s",
            [count],
        ).fetchall()
    return [(str(external_id), int(n)) for external_id, n in rows]


def first_pages(paths: list[str], key: str) -> list[bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
    bodies = []
    for path in paths:
        connection.request("GET", path, headers={"Authorization": f"Bearer {key}"})
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            sys.exit(f"{path}: {response.status} {body[:300]!r}")
        bodies.append(body)
    return bodies


def wrk_rate(script: Path, seconds: int, key: str) -> float:
    """Requests per second of wrk at one connection; exits on any answer but a 200."""
    out = subprocess.run(
        ["wrk", "-t1", "-c1", f"-d{seconds}s", "-s", str(script), "-H", f"Authorization: Bearer {key}",
         f"http://127.0.0.1:{PORT}"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out or "Socket errors" in out:
        sys.exit(f"wrk saw failed requests:\n{out}")
    found = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if found is None:
        sys.exit(f"no rate in wrk's output:\n{out}")
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--customers", type=int, default=8)
    args, revs = ab_arguments(parser, old="bd44c1c")  # the read path before issue 26, part 4
    database_url = os.environ["DATABASE_URL"]
    customers = heaviest_customers(database_url, args.customers)
    paths = [f"/api/v1/customers/{external_id}/events?page_size={PAGE}" for external_id, _ in customers]
    rates: dict[str, list[float]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="timeline-ab-") as scratch:
        base = Path(scratch)
        script = base / "rotate.lua"
        script.write_text(ROTATE % ", ".join(f'"{path}"' for path in paths))
        trees = {name: checkout(rev, base / name) for name, rev in revs.items()}
        log = (base / "gunicorn.log").open("wb")  # the servers' warnings, out of the report's way
        try:
            # One SECRET_KEY for both: each checkout would otherwise make its own (var/), and the
            # API key's hash and the cursors' signatures derive from it.
            env = {**os.environ, "DEBUG": "false", "LOG_LEVEL": "WARNING", "SECRET_KEY": "timeline-ab-" + "x" * 40,
                   "DJANGO_SETTINGS_MODULE": "auditsvc.settings"}  # fmt: skip
            env.pop("REDIS_URL", None)
            made = subprocess.run([sys.executable, "-c", _shell(MAKE_KEY)], cwd=trees["new"], env=env, check=True,
                                  capture_output=True, text=True)  # fmt: skip
            key = made.stdout.split()[-1]
            pages: dict[str, list[bytes]] = {}
            for round_ in range(args.rounds):
                for name in ("old", "new"):
                    with gunicorn(PORT, workers=WORKERS, threads=THREADS, environment=env, tree=trees[name],
                                  stderr=log):  # fmt: skip
                        pages.setdefault(name, first_pages(paths, key))  # also warms the workers
                        first_pages(paths, key)
                        rates[name].append(wrk_rate(script, args.seconds, key))
                if pages["old"] != pages["new"]:
                    sys.exit("the two commits answered a timeline page differently")
                print(f"round {round_ + 1}: old {rates['old'][-1]:.1f} req/s, new {rates['new'][-1]:.1f} req/s, "
                      f"new/old {rates['new'][-1] / rates['old'][-1]:.2f}", flush=True)  # fmt: skip
        finally:
            log.close()
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    report(args, revs, rates, customers)


def report(
    args: argparse.Namespace, revs: dict[str, str], rates: dict[str, list[float]], customers: list[tuple[str, int]]
) -> None:
    ratios = [new / old for old, new in zip(rates["old"], rates["new"], strict=True)]
    rows = "\n".join(
        f"| {n + 1} | {old:.1f} | {new:.1f} | {ratio:.2f} |"
        for n, (old, new, ratio) in enumerate(zip(rates["old"], rates["new"], ratios, strict=True))
    )
    pooled = sum(rates["new"]) / sum(rates["old"])
    sizes = ", ".join(f"{n:,}" for _, n in customers)
    text = f"""
### Customer timeline A/B, {revs["old"]} against {revs["new"]} ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)

`DATABASE_URL=… .venv/bin/python -m bench.timeline_ab --old {args.old} --new {args.new} --seconds {args.seconds} \
--rounds {args.rounds} --customers {args.customers}`: one database for both; per round, each commit under its own
gunicorn ({WORKERS} gthread workers × {THREADS} threads, production settings, LOG_LEVEL=WARNING), {args.seconds} s
of wrk at one connection, old then new, over `GET /api/v1/customers/{{id}}/events?page_size={PAGE}` for the
{len(customers)} customers with the most events ({sizes} events), in turn; every answer a 200, and both commits'
first pages byte for byte the same. Requests per second:

| round | old ({revs["old"]}) | new ({revs["new"]}) | new/old |
| --- | ---: | ---: | ---: |
{rows}

Median new/old: **{statistics.median(ratios):.2f}**; pooled (all new requests / all old): **{pooled:.2f}**.
"""
    publish(text, to_docs=not args.no_docs)


if __name__ == "__main__":
    main()

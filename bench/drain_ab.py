"""The stream drain of two commits, alternating in one run: is a change to the drain a loss?

    .venv/bin/python -m bench.drain_ab [--old 125d5bf] [--new HEAD] [--entries 40000] [--rounds 3] [--no-docs]

Each commit gets a checkout of its own (git worktree, this .venv), a database of its own
(migrated by that commit) and one redis-server (AOF, appendfsync always) shared by both, under
a key prefix per commit. Then, round after round, old and new in turn: the commit's own
accept_event appends the same realistic entries (events.demo) to its stream, in-process, no
HTTP; then BENCH_DRAINERS (2) `manage.py drain_events --once` of that commit empty it side by
side, timed from their start to the last one's exit (so each includes the same start-up).
Each round reports both rates and new/old; the tables grow alike, round by round. Appended to
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.ingest import event_bodies, fresh_database
from bench.redis_server import redis_server
from bench.report import publish

ROOT = Path(__file__).resolve().parent.parent
DRAINERS = int(os.environ.get("BENCH_DRAINERS", "2"))

FILL = """
import json, sys
from events.ingest import stream
from events.ingest.validation import parse_event
from events.models import Source
source, _ = Source.objects.get_or_create(slug="bench", defaults={"name": "Benchmark"})
stream.ensure_groups()
for line in open(sys.argv[-1]):
    stream.accept_event(source=source, item=parse_event(json.loads(line)))
"""


def ab_arguments(parser: argparse.ArgumentParser, *, old: str = "125d5bf") -> tuple[argparse.Namespace, dict[str, str]]:
    """The options every A/B benchmark takes (--old, --new, --rounds, --no-docs) parsed, and the
    two commits' short names; old: the benchmark's default --old."""
    parser.add_argument("--old", default=old)
    parser.add_argument("--new", default="HEAD")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    revs = {name: subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True,
                                 text=True).stdout.strip() for name, rev in (("old", args.old), ("new", args.new))}  # fmt: skip
    return args, revs


def checkout(rev: str, into: Path) -> Path:
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(into), rev], cwd=ROOT, check=True)
    (into / ".venv").symlink_to(ROOT / ".venv")
    return into


def manage(tree: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "manage.py", *args], cwd=tree, env=env, stdout=subprocess.DEVNULL)


def one_round(tree: Path, env: dict[str, str], bodies: Path, entries: int) -> float:
    """Fill the commit's stream with entries, then drain it: events per second of the drain."""
    fill = subprocess.run([sys.executable, "-c", _shell(FILL), str(bodies)], cwd=tree, env=env, check=False,
                          capture_output=True)  # fmt: skip
    if fill.returncode:
        sys.exit(f"filling the stream at {tree} failed:\n{fill.stderr.decode()[-3000:]}")
    started = time.perf_counter()
    drainers = [manage(tree, env, "drain_events", "--once", "--consumer", f"ab-{n}") for n in range(DRAINERS)]
    if any(drainer.wait() for drainer in drainers):
        sys.exit(f"a drainer at {tree} failed")
    return entries / (time.perf_counter() - started)


def _shell(code: str) -> str:
    """code, run with Django set up on the environment's settings (as manage.py shell would)."""
    return (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'auditsvc.settings'); django.setup()\n"
        + code
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=40_000)
    args, revs = ab_arguments(parser)
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="drain-ab-") as scratch:
        base = Path(scratch)
        bodies = base / "bodies.ndjson"
        bodies.write_text("\n".join(b.replace("__KEY__", f"k{n}") for n, b in enumerate(_bodies(args.entries))) + "\n")
        trees = {name: checkout(rev, base / name) for name, rev in revs.items()}
        (base / "redis").mkdir()
        try:
            with redis_server(base / "redis") as server:
                envs = {}
                for name, tree in trees.items():
                    env = {**os.environ, "DATABASE_URL": fresh_database(f"drain_ab_{name}"), "AUDITSVC_INGEST_MODE": "stream",
                           "AUDITSVC_STREAM_URL": server.url, "AUDITSVC_STREAM_PREFIX": f"ab-{name}",
                           "AUDITSVC_STREAM_BATCH": "1000", "DJANGO_SETTINGS_MODULE": "auditsvc.settings"}  # fmt: skip
                    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=tree, env=env, check=True)
                    envs[name] = env
                rates: dict[str, list[float]] = {"old": [], "new": []}
                for round_ in range(args.rounds):
                    for name in ("old", "new"):
                        rates[name].append(one_round(trees[name], envs[name], bodies, args.entries))
                    print(f"round {round_ + 1}: old {rates['old'][-1]:,.0f}/s, new {rates['new'][-1]:,.0f}/s, "
                          f"new/old {rates['new'][-1] / rates['old'][-1]:.2f}")  # fmt: skip
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    report(args, revs, rates)


def _bodies(count: int) -> list[str]:
    from bench.django_setup import setup  # noqa: PLC0415 - events.demo needs Django's apps

    setup()
    return event_bodies(count, None)


def report(args: argparse.Namespace, revs: dict[str, str], rates: dict[str, list[float]]) -> None:
    ratios = [new / old for old, new in zip(rates["old"], rates["new"], strict=True)]
    rows = "\n".join(
        f"| {n + 1} | {old:,.0f} events/s | {new:,.0f} events/s | {ratio:.2f} |"
        for n, (old, new, ratio) in enumerate(zip(rates["old"], rates["new"], ratios, strict=True))
    )
    text = f"""
## Stream drain, {revs["old"]} against {revs["new"]}, alternating ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)

`.venv/bin/python -m bench.drain_ab --old {args.old} --new {args.new} --entries {args.entries} --rounds {args.rounds}`
on this 2-core machine: per round, {args.entries:,} entries appended by each commit's own accept path,
then drained by {DRAINERS} `drain_events --once` of that commit side by side (start-up included).

| round | old ({revs["old"]}) | new ({revs["new"]}) | new/old |
| --- | ---: | ---: | ---: |
{rows}

Median new/old: **{statistics.median(ratios):.2f}**.
"""
    publish(text, to_docs=not args.no_docs)


if __name__ == "__main__":
    main()

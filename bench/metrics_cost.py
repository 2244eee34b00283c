"""What the metrics middleware adds to a request: its counter and histogram, timed in-process.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/auditsvc_verify .venv/bin/python -m bench.metrics_cost [--no-docs]

Each mode runs in a process of its own, since prometheus-client picks its value store at
import: in memory (one process) or the mmap files of multiprocess mode (under gunicorn).
The reference, in the same run: the in-process CPU time of a request to the project's trivial
view through the whole middleware stack, this one included (bench.profile_wsgi's measure;
it needs DATABASE_URL or the embedded database, for its API key).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime

from bench.report import publish

_TIMED = """
import timeit
from auditsvc.metrics import REQUEST_SECONDS, REQUESTS
def one():
    REQUEST_SECONDS.labels(route="/api/v1/events", method="POST").observe(0.003)
    REQUESTS.labels(route="/api/v1/events", method="POST", status="201").inc()
n = 200_000
print(min(timeit.repeat(one, number=n, repeat=3)) / n * 1e6)
"""


def _microseconds(metrics_dir: str | None) -> float:
    # prometheus-client takes multiprocess mode when the variable is present at all, even empty.
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["DJANGO_SETTINGS_MODULE"] = "auditsvc.settings"
    if metrics_dir is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    code = "import django; django.setup()\n" + _TIMED
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def _trivial_view_microseconds(metrics_dir: str) -> float:
    code = "from bench.profile_wsgi import measure_here; print(measure_here('bench.trivial_wsgi', 3000))"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    single = _microseconds(None)
    with tempfile.TemporaryDirectory() as directory:
        multiprocess = _microseconds(directory)
        trivial = _trivial_view_microseconds(directory)
    lines = [
        f"### Metrics middleware cost, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        "Command: `DATABASE_URL=postgres://postgres@127.0.0.1:5432/auditsvc_verify .venv/bin/python -m bench.metrics_cost` "
        "(a request's counter and histogram, best of 3 × 200,000).",
        "",
        "| value store | µs per request |",
        "| --- | ---: |",
        f"| one process (tests, manage.py) | {single:.1f} |",
        f"| multiprocess mode (gunicorn: mmap files) | {multiprocess:.1f} |",
        f"| reference: a whole request to the trivial view, in-process CPU (bench.profile_wsgi) | {trivial:.1f} |",
        "",
        f"The middleware's share of the trivial view's request: {multiprocess / trivial:.1%} "
        "(a single-event ingest request costs about ten times the trivial view: bench.profile_wsgi).",
    ]
    publish("\n".join(lines), to_docs=not args.no_docs)


if __name__ == "__main__":
    main()

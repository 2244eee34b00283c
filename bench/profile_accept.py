"""Where a single-event POST spends its CPU, stage by stage, in-process and in every thread.

    DATABASE_URL=… .venv/bin/python -m bench.profile_accept [--requests 3000] [--mode direct|stream]

Calls the WSGI application (auditsvc.wsgi) directly as bench.profile_wsgi does, under yappi's
CPU clock in all threads (the group committer's included), once through the accept path and
once through Django (AUDITSVC_ACCEPT_PATH=false), each in a process of its own, and gives each
function's own time to the first stage of bench.profile_request's list its file matches. Needs
a migrated database (DATABASE_URL) and, for stream mode, starts a redis-server of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.profile_request import STAGES

ROOT = Path(__file__).resolve().parent.parent


def stage_of_file(path: str) -> str:
    for stage, marker in STAGES:
        if marker in path:
            return stage
    return "other (interpreter, stdlib)"


def measure_here(requests: int) -> dict[str, float]:
    """CPU µs per request by stage, in this process (run as the child)."""
    import yappi  # type: ignore[import-untyped]  # noqa: PLC0415

    from bench import profile_wsgi  # noqa: PLC0415

    yappi.set_clock_type("cpu")
    calls = profile_wsgi.prepared_calls("auditsvc.wsgi", requests)
    yappi.start(builtins=True)
    started = time.process_time()
    calls()
    total = time.process_time() - started
    yappi.stop()
    by_stage: Counter[str] = Counter()
    for function in yappi.get_func_stats():
        by_stage[stage_of_file(function.module)] += function.tsub
    profiled = sum(by_stage.values()) or 1.0
    # yappi's own overhead inflates every stage alike: scale the shares to the unprofiled total
    # measured by bench.profile_wsgi, which the caller reports beside this.
    return {stage: seconds / profiled * 100 for stage, seconds in by_stage.most_common()} | {"_cpu_us": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--mode", choices=["direct", "stream"], default="direct")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_here(args.requests)))
        return
    from bench.profile_wsgi import cpu_per_request  # noqa: PLC0415
    from bench.redis_server import redis_server  # noqa: PLC0415

    directory = Path(tempfile.mkdtemp(prefix="auditsvc-profile-accept-"))
    shares: dict[str, dict[str, float]] = {}
    micros: dict[str, float] = {}
    try:
        with redis_server(directory) as stream_redis:
            for name, accept_path in (("through Django", "false"), ("accept path", "true")):
                env = {**os.environ, "DEBUG": "false", "LOG_FORMAT": "json", "ALLOWED_HOSTS": "*", "AUDITSVC_INGEST_MODE": args.mode,
                       "AUDITSVC_STREAM_URL": stream_redis.url, "AUDITSVC_ACCEPT_PATH": accept_path}  # fmt: skip
                micros[name] = cpu_per_request("auditsvc.wsgi", env, args.requests)
                done = subprocess.run([sys.executable, "-m", "bench.profile_accept", "--child", "--requests",
                                       str(args.requests)], cwd=ROOT, env=env, capture_output=True, text=True,
                                      check=True)  # fmt: skip
                shares[name] = json.loads(done.stdout.strip().splitlines()[-1])
                shares[name].pop("_cpu_us")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    names = list(shares)
    print(f"{args.mode}-mode single-event POST, in-process, {args.requests} requests, CPU µs per request by stage")
    print("(yappi's shares of own time in all threads, applied to the unprofiled CPU per request):")
    print("| stage | " + " | ".join(names) + " |")
    print("| --- |" + " ---: |" * len(names))
    stages = sorted({stage for share in shares.values() for stage in share}, key=lambda s: -shares[names[0]].get(s, 0))
    for stage in stages:
        cells = [f"{shares[name].get(stage, 0.0) / 100 * micros[name]:.0f}" for name in names]
        print(f"| {stage} | " + " | ".join(cells) + " |")
    print("| **total (unprofiled)** | " + " | ".join(f"**{micros[name]:.0f}**" for name in names) + " |")


if __name__ == "__main__":
    main()

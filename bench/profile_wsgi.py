"""CPU per request of each single-event path, in-process (no gunicorn, no sockets, no load).

    .venv/bin/python -m bench.profile_wsgi [--requests 3000]

Calls the WSGI application directly from 16 threads (BENCH_THREADS), so that the group
committer shares its commits as under load, and divides the process's CPU time (user + system,
every thread: the group committer included) by the requests. Unlike a
rate under load, this figure barely moves when the machine is noisy, so the ratios between
the paths are the steady part of `make bench`. Each path runs in a process of its own (the
bare reference changes the settings at import): the trivial view, the bare view, a direct-mode
POST (group commit, PostgreSQL) and a stream-mode POST (a redis-server of its own, AOF always),
each through the accept path and through Django (AUDITSVC_ACCEPT_PATH=false: the version before).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATHS = {
    "trivial": ("bench.trivial_wsgi", {}),
    "bare": ("bench.trivial_wsgi", {"BENCH_BARE": "1"}),
    "direct, through Django": ("auditsvc.wsgi", {"AUDITSVC_INGEST_MODE": "direct", "AUDITSVC_ACCEPT_PATH": "false"}),
    "direct": ("auditsvc.wsgi", {"AUDITSVC_INGEST_MODE": "direct"}),
    "stream, through Django": ("auditsvc.wsgi", {"AUDITSVC_INGEST_MODE": "stream", "AUDITSVC_ACCEPT_PATH": "false"}),
    "stream": ("auditsvc.wsgi", {"AUDITSVC_INGEST_MODE": "stream"}),
}


def prepared_calls(app_module: str, requests: int) -> Callable[[], None]:
    """Set up Django and app_module in this process, warm it with 500 requests, and return the
    call that sends `requests` more (each a new event, through the WSGI application)."""
    import importlib  # noqa: PLC0415

    from bench.django_setup import setup  # noqa: PLC0415

    setup()
    from bench.ingest import event_bodies  # noqa: PLC0415
    from events.keys import create_api_key  # noqa: PLC0415
    from events.models import Source  # noqa: PLC0415

    source, _ = Source.objects.get_or_create(slug="profile-wsgi", defaults={"name": "Profile"})
    key = create_api_key(source=source, scopes=["ingest"]).plaintext
    application = importlib.import_module(app_module).application
    run = time.time_ns()
    bodies = [
        body.replace("__KEY__", f"w{run}-{n}").encode() for n, body in enumerate(event_bodies(requests + 500, None))
    ]

    def call(body: bytes) -> str:
        environ = {
            "REQUEST_METHOD": "POST", "PATH_INFO": "/api/v1/events", "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/json",
            "HTTP_AUTHORIZATION": f"Bearer {key}", "HTTP_HOST": "127.0.0.1:8000", "REMOTE_ADDR": "127.0.0.1",
        }  # fmt: skip
        status: list[str] = []
        answer = application(environ, lambda answer, headers: status.append(answer))
        b"".join(answer)
        getattr(answer, "close", lambda: None)()  # as a WSGI server does: request_finished
        return status[0]

    for body in bodies[:500]:  # warm caches, connections, the committer thread
        answer = call(body)
        if not answer.startswith("20"):
            raise SystemExit(f"{app_module}: {answer}")

    def send() -> None:
        """From THREADS threads at once (default 16, as the benchmark's connections): the
        group committer then commits groups, as under load, and its commit is shared."""
        threads = int(os.environ.get("BENCH_THREADS", "16"))
        chunks = [bodies[500 + n :: threads] for n in range(threads)]
        senders = [threading.Thread(target=lambda chunk=chunk: [call(body) for body in chunk]) for chunk in chunks]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()

    return send


def measure_here(app_module: str, requests: int) -> float:
    """CPU µs per request of app_module in this process (run as the child)."""
    send = prepared_calls(app_module, requests)
    started = time.process_time()
    send()
    return (time.process_time() - started) / requests * 1e6


def cpu_per_request(app_module: str, env: dict[str, str], requests: int) -> float:
    """measure_here in a process of its own, with env."""
    done = subprocess.run([sys.executable, "-m", "bench.profile_wsgi", "--child", app_module, "--requests",
                           str(requests)], cwd=ROOT, env=env, capture_output=True, text=True, check=True)  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(f"{measure_here(args.child, args.requests):.1f}")
        return
    from bench.redis_server import redis_server  # noqa: PLC0415

    directory = Path(tempfile.mkdtemp(prefix="auditsvc-profile-wsgi-"))
    results = {}
    try:
        with redis_server(directory) as stream_redis:
            for name, (module, extra) in PATHS.items():
                env = {**os.environ, "DEBUG": "false", "LOG_FORMAT": "json", "ALLOWED_HOSTS": "*", **extra,
                       "AUDITSVC_STREAM_URL": stream_redis.url}  # fmt: skip
                results[name] = cpu_per_request(module, env, args.requests)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"CPU per request, in-process, {args.requests} requests each (µs; ratio = trivial view's CPU / this one's):")
    print("| path | CPU µs per request | rate it allows, as a share of the trivial view's |")
    print("| --- | ---: | ---: |")
    for name, micros in results.items():
        print(f"| {name} | {micros:.0f} | {results['trivial'] / micros:.2f} |")


if __name__ == "__main__":
    main()

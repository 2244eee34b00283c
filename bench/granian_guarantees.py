"""What the current server guarantees, tried on gunicorn and on granian (issue 26, part 2).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/auditsvc_granian .venv/bin/python -m bench.granian_guarantees

Small experiments, each printed as one line (the results are written up in docs/BENCHMARKS.md):
exit: which exit code paths a worker runs on a graceful stop (bench.exit_probe_wsgi);
shutdown: SIGTERM to the master under single-event POSTs (c16) and reads: every acknowledged
event stored once? every answered read recorded (auditsvc.read events)?;
kill: kill -9 one worker under load: does the server go on, and is a worker started again?;
boot: SIGTERM to the master while the workers boot: does it stop?;
production: AUDITSVC_ENV=production with settings missing: refused before any worker starts?;
shutdown again under granian with bench.granian_wsgi (worker_exit's work in a finalizer);
lifetime (--lifetime): granian's --workers-lifetime 60 under load, acknowledged events intact.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import psycopg

from bench.drain_ab import _shell
from bench.ingest import _wrk_once, event_bodies, fresh_database
from bench.ingest_ab import MAKE_KEY
from bench.server import free_port, granian, gunicorn, worker_pids
from bench.servers_ab import MAKE_READ_KEY

ROOT = Path(__file__).resolve().parent.parent


def server(kind: str, port: int, env: dict[str, str], *, app: str = "auditsvc.wsgi",
           extra: tuple[str, ...] = ()) -> AbstractContextManager[subprocess.Popen[bytes]]:  # fmt: skip
    if kind == "granian+finalizer":
        kind, app = "granian", "bench.granian_wsgi"
    log = (Path(tempfile.gettempdir()) / f"guarantees-{kind}-{port}.log").open("wb")
    if kind == "gunicorn":
        return gunicorn(port, workers=2, threads=8, app=app, environment=env, stderr=log)
    return granian(port, workers=2, threads=8, app=app, environment=env, stderr=log, extra=extra)


def stopped(process: subprocess.Popen[bytes], timeout: float = 40) -> str:
    """SIGTERM the master and wait for it: how it ended."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        workers = worker_pids(process.pid)
        process.kill()
        process.wait()
        for pid in workers:  # a granian worker outlives its killed master, still serving
            os.kill(pid, signal.SIGKILL)
        return f"still running {timeout:.0f} s after SIGTERM (killed, with its workers {workers})"
    return f"exit {code} after {time.monotonic() - started:.1f} s"


def exit_paths(kind: str) -> str:
    with tempfile.TemporaryDirectory() as probes:
        port = free_port()
        with server(kind, port, {"EXIT_PROBE_DIR": probes}, app="bench.exit_probe_wsgi") as process:
            time.sleep(4)  # both workers booted
            ended = stopped(process)
        marks: dict[str, list[str]] = {}
        for path in Path(probes).iterdir():
            pid, way = path.name.split(".", 1)
            marks.setdefault(pid, []).append(way)
    ways = sorted({tuple(sorted(w)) for w in marks.values()})
    return f"{kind} exit paths per worker: {ways}; {ended}"


class Reader(threading.Thread):
    """GET /api/v1/events?page_size=10 in a loop until the server goes; counts 200s."""

    def __init__(self, port: int, key: str) -> None:
        super().__init__(daemon=True)
        self.port, self.key, self.answered = port, key, 0

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while True:
            try:
                connection.request(
                    "GET", "/api/v1/events?page_size=10", headers={"Authorization": f"Bearer {self.key}"}
                )
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    self.answered += 1
            except (OSError, http.client.HTTPException):
                return


def database(name: str) -> tuple[dict[str, str], str, str]:
    env = {**os.environ, "DATABASE_URL": fresh_database(name), "AUDITSVC_INGEST_MODE": "direct",
           "DJANGO_SETTINGS_MODULE": "auditsvc.settings", "GUNICORN_MAX_REQUESTS": "0"}  # fmt: skip
    env.pop("REDIS_URL", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    keys = [subprocess.run([sys.executable, "-c", _shell(script)], cwd=ROOT, env=env, check=True, capture_output=True,
                           text=True).stdout.split()[-1] for script in (MAKE_KEY, MAKE_READ_KEY)]  # fmt: skip
    return env, keys[0], keys[1]


def under_load(kind: str, name: str, action: Callable[[subprocess.Popen[bytes], int], str], *, seconds: int = 10,
               extra: tuple[str, ...] = ()) -> str:  # fmt: skip
    """Single-event POSTs at c16 (and one reader) for seconds, action(master, port) 3 s in; then
    the exactly-once check of every acknowledged key, and the reads recorded against answered."""
    env, ingest_key, read_key = database(f"guarantees_{name}")
    port = free_port()
    bodies = event_bodies(500, None)
    with tempfile.TemporaryDirectory() as scratch, server(kind, port, env, extra=extra) as process:
        time.sleep(4)
        result: dict[str, Any] = {}
        load = threading.Thread(target=lambda: result.update(_wrk_once(
            f"http://127.0.0.1:{port}/api/v1/events", bodies, seconds=seconds, connections=16, key=ingest_key,
            workdir=Path(scratch))))  # fmt: skip
        reader = Reader(port, read_key)
        load.start()
        reader.start()
        time.sleep(3)
        outcome = action(process, port)
        load.join()
        answered = reader.answered
        if process.poll() is None:
            process.terminate()
            process.wait(40)
        time.sleep(1)
    keys = result["keys"]
    with psycopg.connect(env["DATABASE_URL"]) as db:
        rows = db.execute("SELECT idempotency_key, count(*) FROM events_event WHERE idempotency_key = ANY(%s) "
                          "GROUP BY 1", [keys]).fetchall()  # fmt: skip
        stored: dict[str, int] = {key: count for key, count in rows}
        total = db.execute("SELECT count(*) FROM events_event e JOIN events_source s ON s.id = e.source_id "
                           "WHERE s.slug = 'bench'").fetchone()  # fmt: skip
        reads = db.execute("SELECT count(*) FROM events_event e JOIN events_eventtype t ON t.id = e.type_id "
                           "WHERE t.name = 'auditsvc.read'").fetchone()  # fmt: skip
    missing = sum(1 for k in keys if k not in stored)
    twice = sum(1 for n in stored.values() if n > 1)
    return (f"{kind} {name}: {outcome}; acknowledged {len(keys)}, missing {missing}, stored twice {twice}, "
            f"stored without an acknowledgement {(total[0] if total else 0) - len(stored)}; wrk socket errors "
            f"{result['errors']}, non-2xx {result['failed']}; reads answered {answered}, recorded "
            f"{reads[0] if reads else 0}")  # fmt: skip


def sigterm(process: subprocess.Popen[bytes], port: int) -> str:
    return "SIGTERM to the master: " + stopped(process)


def kill_a_worker(process: subprocess.Popen[bytes], port: int) -> str:
    before = worker_pids(process.pid)
    os.kill(before[0], signal.SIGKILL)
    time.sleep(5)
    alive = process.poll() is None
    after = worker_pids(process.pid) if alive else []
    return (
        f"kill -9 worker {before[0]}: master {'running' if alive else f'exited {process.returncode}'}, "
        f"workers {before} -> {after}"
    )


def server_command(kind: str, port: int) -> list[str]:
    """The service under gunicorn (its gunicorn.conf.py) or granian, 2 workers x 8 threads each."""
    if kind == "gunicorn":
        return [str(Path(sys.executable).parent / "gunicorn"), "auditsvc.wsgi", "-c", "gunicorn.conf.py", "-b",
                f"127.0.0.1:{port}"]  # fmt: skip
    return [str(Path(sys.executable).parent / "granian"), "--interface", "wsgi", "--port", str(port),
            "--workers", "2", "--blocking-threads", "8", "auditsvc.wsgi:application"]  # fmt: skip


def production(kind: str) -> str:
    env = {**os.environ, "AUDITSVC_ENV": "production", "DATABASE_URL": os.environ["DATABASE_URL"]}
    for name in ("SECRET_KEY", "AUDIT_SIGNING_KEY", "AUDIT_PUBLIC_KEYS", "AUDITSVC_DATA_KEY"):
        env.pop(name, None)
    port = free_port()
    command = server_command(kind, port)
    try:
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
            check=False,
        )  # granian logs to stdout
    except subprocess.TimeoutExpired:
        return f"{kind} production without settings: still running after 60 s"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    booted = sum("Booting worker" in line or "Spawning worker" in line for line in lines)
    return (
        f"{kind} production without settings: exit {done.returncode}, workers started {booted}, "
        f"{sum('Traceback' in line for line in lines)} tracebacks; last line: {lines[-1][:200] if lines else ''}"
    )


def stop_while_booting(kind: str) -> str:
    """SIGTERM to the master 1 s after it starts, while the workers still import Django."""
    port = free_port()
    command = server_command(kind, port)
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    return f"{kind} SIGTERM while booting: " + stopped(process, timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lifetime", action="store_true", help="also granian --workers-lifetime 60 (about 80 s)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from bench.django_setup import setup  # noqa: PLC0415 - events.demo needs Django's apps

    setup()
    for kind in ("gunicorn", "granian"):
        print(stop_while_booting(kind), flush=True)
        print(exit_paths(kind), flush=True)
        print(production(kind), flush=True)
        print(under_load(kind, f"shutdown_{kind}", sigterm), flush=True)
        print(under_load(kind, f"kill_{kind}", kill_a_worker), flush=True)
    print(under_load("granian+finalizer", "shutdown_granian_finalizer", sigterm), flush=True)
    print(under_load("granian", "kill_granian_respawn", kill_a_worker, extra=("--respawn-failed-workers",)), flush=True)
    if args.lifetime:
        print(under_load("granian", "lifetime_granian", lambda process, port: "lifetime 60 s", seconds=80,
                         extra=("--workers-lifetime", "60", "--respawn-interval", "1")), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

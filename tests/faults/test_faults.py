"""Fault suite: a real gunicorn and a throwaway PostgreSQL, broken on purpose under load.

Direct mode: after worker and master kills, PostgreSQL restarts (fast and immediate) and
saturation, every acknowledged event is stored exactly once and nothing unasked-for is stored;
with the database gone, ingest answers 503 quickly and the service recovers by itself.

Stream mode (a redis-server of our own, AOF always): after kill -9 of the drainer mid-batch,
kill -9 of Redis (restarted on its AOF) and PostgreSQL stopped for 30 s while events go on
being accepted, every acknowledged event is stored exactly once.

Direct mode with the cache's Redis (REDIS_URL, rate limits) killed under load: no request
fails, and once it is back the limits count again.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from tests.paths import REPO_ROOT
from tests.processes import free_port
from tests.redis_servers import RedisServer, redis_server

pytestmark = pytest.mark.faults
ROOT = REPO_ROOT


@dataclass
class Database:
    server: Any
    url: str
    admin_url: str

    def pg_ctl(self, *args: str) -> None:
        from pgserver import _commands  # type: ignore[import-untyped]  # noqa: PLC0415

        _commands.pg_ctl(  # type: ignore[attr-defined]  # generated per binary at import
            ["-w", *args], pgdata=self.server.pgdata, user=self.server.system_user, timeout=60
        )


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """A PostgreSQL of our own (never the machine's shared one), under pgserver."""
    import pgserver  # type: ignore[import-untyped]  # noqa: PLC0415

    data = tmp_path_factory.mktemp("faultpg")
    data.chmod(0o777)
    server = pgserver.get_server(str(data / "pg"), cleanup_mode="stop")  # type: ignore[attr-defined]
    socket_dir = dict(part.split("=") for part in server.get_uri().split("?")[1].split("&"))["host"]
    admin_url = f"postgresql://postgres@{quote(socket_dir, safe='')}/postgres"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute("CREATE DATABASE faults")
    database = Database(server, f"postgresql://postgres@{quote(socket_dir, safe='')}/faults", admin_url)
    yield database
    server.cleanup()


class Service:
    """gunicorn serving auditsvc against the throwaway database."""

    def __init__(self, database: Database, tmp: Path, log: Path | None = None, **environment: str) -> None:
        self.port = free_port()
        self.log = log  # gunicorn's and the workers' log lines go there (else to the test's stderr)
        self.env = {
            **os.environ, "DATABASE_URL": database.url, "SECRET_KEY": "faults-" + "x" * 40, "DEBUG": "false",
            "AUDITSVC_VAR_DIR": str(tmp), "WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "4", "DB_CONNECT_TIMEOUT": "2",
            "AUDITSVC_API_KEY_CACHE_SECONDS": "5", **environment,
        }  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def manage(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, check=True)  # fmt: skip
        return done.stdout

    def start(self) -> None:
        command = [str(Path(sys.executable).parent / "gunicorn"), "auditsvc.wsgi", "-c", "gunicorn.conf.py",
                   "-b", f"127.0.0.1:{self.port}", "--log-level", "warning"]  # fmt: skip
        stderr = open(self.log, "ab") if self.log else None  # noqa: SIM115 - the child keeps its own copy
        try:
            self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stderr=stderr)
        finally:
            if stderr is not None:
                stderr.close()
        wait_until(lambda: get(self.url("/healthz"))[0] == 200, 30)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def workers(self) -> list[int]:
        assert self.process is not None
        pid = self.process.pid
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)


def get(url: str, timeout: float = 5) -> tuple[int, dict[str, Any], dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}"), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), dict(exc.headers)
    except OSError:
        return 0, {}, {}


def wait_until(condition: Any, seconds: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if condition():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds} s")


@dataclass
class Load:
    """Clients that post single events and batches with idempotency keys, retrying like a real
    client (same key, on connection errors, timeouts, 503 and 5xx), recording what was acked."""

    service: Service
    key: str
    acked: set[str] = field(default_factory=set)
    attempted: set[str] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    unfinished: int = 0
    run: str = field(default_factory=lambda: f"run{time.monotonic_ns()}")  # this load's key prefix
    batches: bool = True  # also batches of 5 (a third of the posts); else single events only
    retries: int = 0  # posts answered 5xx/429 or not at all, and sent again
    answers: Counter[int] = field(default_factory=Counter)  # every attempt's status (0: no answer)

    def start(self, clients: int) -> None:
        for n in range(clients):
            thread = threading.Thread(target=self._client, args=(n,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(120)
        self.threads.clear()
        self.stop.clear()

    def _client(self, number: int) -> None:
        rng = random.Random(number)
        sequence = 0
        while not self.stop.is_set():
            sequence += 1
            prefix = f"{self.run}-c{number}-{sequence}"
            size = 1 if not self.batches or rng.random() < 0.7 else 5
            keys = [f"{prefix}-{i}" for i in range(size)]
            events: list[dict[str, Any]] = [
                {"type": "fault.test", "customer": f"cus_{rng.randrange(50)}", "idempotency_key": k,
                       "payload": {"n": sequence}} for k in keys]  # fmt: skip
            document: dict[str, Any] = events[0] if size == 1 else {"events": events}
            body = json.dumps(document).encode()
            with self.lock:
                self.attempted.update(keys)
            if self._post_until_acked(body):
                with self.lock:
                    self.acked.update(keys)
            else:
                with self.lock:
                    self.unfinished += 1

    def _post_until_acked(self, body: bytes) -> bool:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            request = urllib.request.Request(self.service.url("/api/v1/events"), data=body, method="POST", headers={
                "Authorization": f"Bearer {self.key}", "Content-Type": "application/json"})  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    with self.lock:
                        self.answers[response.status] += 1
                    if response.status in (200, 201, 202):
                        return True
            except urllib.error.HTTPError as exc:
                with self.lock:
                    self.answers[exc.code] += 1
                if exc.code < 500 and exc.code != 429:
                    raise AssertionError(f"unexpected {exc.code}: {exc.read()[:300]!r}") from None
            except OSError:
                with self.lock:
                    self.answers[0] += 1
                # refused, reset, timed out: the service or its database is down; retry
            with self.lock:
                self.retries += 1
            time.sleep(0.2)
        return False


@pytest.fixture(scope="module")
def service(database: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str]]:
    tmp = tmp_path_factory.mktemp("faultsvc")
    service = Service(database, tmp)
    service.manage("migrate", "-v0")
    service.manage("create_source", "faults")
    key = service.manage("create_api_key", "--source", "faults", "--scopes", "ingest,read").strip()
    service.start()
    yield service, key
    service.stop()


def stored_keys(database: Database, run: str) -> dict[str, int]:
    with psycopg.connect(database.url) as connection:
        rows = connection.execute(
            "SELECT idempotency_key, count(*) FROM events_event WHERE idempotency_key LIKE %s GROUP BY 1",
            [f"{run}-%"],
        ).fetchall()
    return {key: count for key, count in rows}


RESULTS = ROOT / "test-artifacts" / "fault-results.json"


def record(scenario: str, load: Load, stored: dict[str, int], **extra: float) -> None:
    """Append this scenario's figures to test-artifacts/fault-results.json (docs/reliability.md)."""
    RESULTS.parent.mkdir(exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[scenario] = {
        "acknowledged": len(load.acked),
        "lost": len([k for k in load.acked if k not in stored]),
        "duplicated": len([k for k, n in stored.items() if n != 1]),
        "unasked": len([k for k in stored if k not in load.attempted]),
        **extra,
    }
    RESULTS.write_text(json.dumps(results, indent=2))


def check_exactly_once(load: Load, database: Database, scenario: str, **extra: float) -> None:
    stored = stored_keys(database, load.run)
    record(scenario, load, stored, **extra)
    assert load.unfinished == 0
    assert load.acked, "the load acknowledged nothing"
    assert not [k for k in load.acked if k not in stored], "acknowledged events are missing"
    assert not [k for k, n in stored.items() if n != 1], "events stored twice"
    assert not [k for k in stored if k not in load.attempted], "events stored that nobody sent"


def test_kill_a_worker_then_the_master_under_load(service, database):
    svc, key = service
    load = Load(svc, key)
    load.start(8)
    time.sleep(2)
    os.kill(svc.workers()[0], signal.SIGKILL)
    time.sleep(3)
    assert svc.process is not None
    os.kill(svc.process.pid, signal.SIGKILL)
    svc.process.wait(10)
    time.sleep(1.5)  # the orphaned workers notice their master is gone and exit
    svc.start()
    time.sleep(3)
    load.finish()

    check_exactly_once(load, database, "kill -9 a worker, then the master (and restart it)")


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgresql_restarts_under_load(service, database, mode):
    svc, key = service
    load = Load(svc, key)
    load.start(8)
    time.sleep(2)
    database.pg_ctl("-m", mode, "restart")
    back = time.monotonic()
    acked_before = len(load.acked)
    recovery = wait_until(lambda: len(load.acked) > acked_before + 5, 10)
    time.sleep(2)
    load.finish()

    check_exactly_once(load, database, f"pg_ctl restart -m {mode}", recovery_seconds=round(recovery, 2))
    assert recovery < 10, f"service answered again {recovery:.1f} s after the database came back"
    assert time.monotonic() - back > 0


def test_saturation(service, database):
    svc, key = service
    load = Load(svc, key)
    load.start(48)  # six times the 8 worker threads
    time.sleep(6)
    load.finish()

    check_exactly_once(load, database, "saturation: 48 clients for 8 worker threads")


def test_database_down_means_503_quickly_and_recovery_without_restart(service, database):
    svc, key = service
    database.pg_ctl("-m", "fast", "stop")
    try:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        request = urllib.request.Request(
            svc.url("/api/v1/events"), data=b'{"type": "fault.down"}', method="POST", headers=headers
        )
        started = time.monotonic()
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=10)
        elapsed = time.monotonic() - started
        body = json.loads(answer.value.read())
        ready = get(svc.url("/readyz"))
        alive = get(svc.url("/healthz"))
    finally:
        database.server.ensure_postgres_running()  # with its own socket options

    assert answer.value.code == 503
    assert answer.value.headers["Retry-After"]
    assert answer.value.headers["Content-Type"] == "application/json"
    assert body["errors"][0]["code"] == "database_unavailable"
    assert elapsed < 3
    assert ready[0] == 503
    assert alive[0] == 200
    recovery = wait_until(lambda: get(svc.url("/readyz"))[0] == 200, 10)
    assert recovery < 10
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["database stopped"] = {"ingest_503_seconds": round(elapsed, 3), "recovery_seconds": round(recovery, 2)}
    RESULTS.write_text(json.dumps(results, indent=2))


# --- Direct mode, the cache's Redis killed -------------------------------------------------

UNKNOWN_KEY_LIMIT = 5  # per client address and minute: the test's guesses reach it, the load never
GUESS = "Bearer audit_0000000000_guess"  # counted as an unknown key


@pytest.fixture(scope="module")
def cache_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The cache's Redis (REDIS_URL): the rate-limit counters, nothing on disk."""
    with redis_server(tmp_path_factory.mktemp("faultcache"), "--appendonly", "no") as server:
        yield server


@pytest.fixture(scope="module")
def cache_service(
    database: Database, cache_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, str]]:
    tmp = tmp_path_factory.mktemp("faultcachesvc")
    limit = str(UNKNOWN_KEY_LIMIT)
    service = Service(database, tmp, log=tmp / "gunicorn.log", AUDITSVC_INGEST_MODE="direct",
                      REDIS_URL=cache_redis.url, AUDITSVC_UNKNOWN_KEY_LIMIT_PER_MINUTE=limit)  # fmt: skip
    service.manage("migrate", "-v0")
    service.manage("create_source", "faults-cache")
    key = service.manage("create_api_key", "--source", "faults-cache", "--scopes", "ingest,read").strip()
    service.start()
    yield service, key
    service.stop()


def status_of(service: Service, path: str, authorization: str) -> int:
    request = urllib.request.Request(service.url(path), headers={"Authorization": authorization})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def counted_in_redis(port: int) -> int:
    """The per-key counters' sum in the cache's Redis (Django's keys: auditsvc:1:throttle:...)."""
    import redis  # noqa: PLC0415

    client: Any = redis.Redis(port=port)  # Any: redis-py types each answer "value or Awaitable"
    return sum(int(client.get(key) or 0) for key in client.scan_iter("auditsvc:1:throttle:*"))


def uncounted_requests(service: Service) -> float:
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    with urllib.request.urlopen(service.url("/metrics"), timeout=5) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "auditsvc_rate_limit_unavailable_total"
    )


def test_cache_redis_killed_under_load_fails_open_then_limits_count_again(cache_service, cache_redis, database):
    svc, key = cache_service
    load = Load(svc, key)
    load.start(8)
    time.sleep(2)
    counted_before = counted_in_redis(cache_redis.port)
    cache_redis.kill()
    acked_at_kill = len(load.acked)
    time.sleep(1)
    reads = [status_of(svc, "/api/v1/events?page_size=5", f"Bearer {key}") for _ in range(10)]
    guesses = [status_of(svc, "/api/v1/events", GUESS) for _ in range(UNKNOWN_KEY_LIMIT * 2)]
    time.sleep(3)
    acked_while_down = len(load.acked) - acked_at_kill
    uncounted = uncounted_requests(svc)
    cache_redis.start()  # empty: what it counted is gone
    limited_after = wait_until(lambda: status_of(svc, "/api/v1/events", GUESS) == 429, 15)
    wait_until(lambda: counted_in_redis(cache_redis.port) > 0, 10)  # the load is counted again
    time.sleep(2)
    load.finish()
    assert svc.log is not None
    log = svc.log.read_text(errors="replace")
    outages = log.count("the cache's Redis is unreachable")

    check_exactly_once(load, database, "direct: kill -9 the cache's Redis (rate limits), restart it",
                       acknowledged_while_redis_was_down=acked_while_down, outage_log_lines=outages,
                       seconds_to_a_429_after_restart=round(limited_after, 2))  # fmt: skip
    assert counted_before > 0  # the limits did count through this Redis
    assert set(load.answers) <= {200, 201}, load.answers  # no 5xx, no 429, never without an answer
    assert acked_while_down > 50
    assert reads == [200] * 10
    assert guesses == [401] * 10  # past the limit, but uncounted: refused as unknown, not 429 or 503
    assert uncounted >= 10
    assert 1 <= outages <= 2, log  # once per worker that met it (2 workers), not once per request
    assert log.count("the cache's Redis answers again") == outages


# --- Stream mode ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stream_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("faultredis")) as server:
        yield server


@pytest.fixture(scope="module")
def stream_service(
    database: Database, stream_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, str]]:
    tmp = tmp_path_factory.mktemp("faultstream")
    service = Service(database, tmp, AUDITSVC_INGEST_MODE="stream", AUDITSVC_STREAM_URL=stream_redis.url,
                      AUDITSVC_STREAM_PREFIX="faults", AUDITSVC_STREAM_CLAIM_IDLE_SECONDS="2")  # fmt: skip
    service.manage("migrate", "-v0")
    service.manage("create_source", "faults-stream")
    key = service.manage("create_api_key", "--source", "faults-stream", "--scopes", "ingest,read").strip()
    service.start()
    yield service, key
    service.stop()


class DrainerProcess:
    """manage.py drain_events as its own process, killable."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "manage.py", "drain_events", "--batch", "200"]
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.service.env, stdout=subprocess.DEVNULL)

    def wait_until_reading(self) -> None:
        """Until this process reads from the stream (a fault injected before that would hit a
        process still starting, which refuses to start without Redis: another scenario)."""
        import redis  # noqa: PLC0415

        assert self.process is not None
        suffix = f"-{self.process.pid}"
        client = redis.Redis.from_url(self.service.env["AUDITSVC_STREAM_URL"])

        def reading() -> bool:
            assert self.process is not None and self.process.poll() is None, "the drainer exited"
            try:
                consumers: Any = client.xinfo_consumers("faults:{s0}:events", "drainers")
            except redis.ResponseError:  # no group yet
                return False
            return any(c["name"].decode().endswith(suffix) for c in consumers)

        wait_until(reading, 30)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def stream_lag(service: Service) -> int:
    status, body, _ = get(service.url("/readyz"))
    return int(body["lag"]["entries"]) if status == 200 else -1


def pending_in_drainers(redis_port: int) -> int:
    import redis  # noqa: PLC0415

    try:
        summary: Any = redis.Redis(port=redis_port).xpending("faults:{s0}:events", "drainers")
    except redis.ResponseError as exc:  # NOGROUP: the drainer has not made its group yet
        if "NOGROUP" not in str(exc):
            raise
        return 0
    return int(summary["pending"])


def drained_then_checked(load: Load, service: Service, drainer: DrainerProcess, database: Database,
                         scenario: str, **extra: float) -> None:  # fmt: skip
    load.finish()
    seconds = wait_until(lambda: stream_lag(service) == 0, 60)
    drainer.stop()
    check_exactly_once(load, database, scenario, drain_after_load_seconds=round(seconds, 2), **extra)


def loaded_stream(service: Service, key: str) -> tuple[DrainerProcess, Load]:
    """A drainer running, and 8 clients posting single events for 2 s already."""
    drainer = DrainerProcess(service)
    drainer.start()
    drainer.wait_until_reading()
    load = Load(service, key, batches=False)
    load.start(8)
    time.sleep(2)
    return drainer, load


def test_stream_kill_9_the_drainer_mid_batch(stream_service, stream_redis, database):
    svc, key = stream_service
    drainer, load = loaded_stream(svc, key)
    # Kill it while it holds a batch: taken from the stream, not yet acknowledged. (It may
    # acknowledge between the look and the kill: then it is started and killed again.)
    held = 0
    for _ in range(20):
        wait_until(lambda: pending_in_drainers(stream_redis.port) > 0, 10)
        drainer.kill()
        held = pending_in_drainers(stream_redis.port)
        if held:
            break
        drainer.start()
        time.sleep(0.5)
    time.sleep(1)
    drainer.start()  # a new consumer: claims the dead one's entries after the 2 s idle time
    time.sleep(4)

    drained_then_checked(load, svc, drainer, database, "stream: kill -9 the drainer mid-batch",
                         entries_held_by_the_killed_drainer=held)  # fmt: skip
    assert held > 0


def test_stream_kill_9_redis_and_restart_it_on_its_aof(stream_service, stream_redis, database):
    svc, key = stream_service
    drainer, load = loaded_stream(svc, key)
    retries_before = load.retries
    stream_redis.kill()
    time.sleep(1)
    stream_redis.start()  # same directory: replays the AOF
    acked_at_restart = len(load.acked)
    recovery = wait_until(lambda: len(load.acked) > acked_at_restart + 5, 15)
    time.sleep(2)
    retried = load.retries - retries_before

    drained_then_checked(load, svc, drainer, database, "stream: kill -9 Redis, restart on its AOF",
                         recovery_seconds=round(recovery, 2), posts_retried=retried)  # fmt: skip
    assert retried > 0  # Redis was really gone: posts failed and were sent again


def test_stream_accepts_through_30_s_without_postgresql_then_drains(stream_service, database):
    svc, key = stream_service
    drainer, load = loaded_stream(svc, key)
    database.pg_ctl("-m", "fast", "stop")
    try:
        acked_at_stop = len(load.acked)
        time.sleep(15)  # three times the API-key cache's 5 s: every worker's cached key is stale now
        acked_halfway = len(load.acked)
        time.sleep(15)
        accepted_meanwhile = len(load.acked) - acked_at_stop
        accepted_late = len(load.acked) - acked_halfway
        ready = get(svc.url("/readyz"))
    finally:
        database.server.ensure_postgres_running()
    time.sleep(2)

    drained_then_checked(load, svc, drainer, database, "stream: PostgreSQL stopped for 30 s",
                         accepted_while_postgresql_was_down=accepted_meanwhile,
                         accepted_in_its_last_15_s=accepted_late)  # fmt: skip
    assert accepted_late > 100  # keys known before the outage still admit events
    assert ready[0] == 200
    assert ready[1]["database"] == "unreachable"
    assert ready[1]["lag"]["entries"] > 0

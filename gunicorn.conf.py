"""gunicorn settings shared by `make run`, the benchmarks and the container image."""

import os
import tempfile

from auditsvc.logs import gunicorn_logging_config

# Threads overlap database round trips (commits) within a worker; see docs/BENCHMARKS.md.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
# Bound header sizes (the body cap is the service's own, AUDITSVC_MAX_BODY_BYTES).
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None  # the workers log each request already
errorlog = "-"
# gunicorn's own lines in the workers' format (LOG_FORMAT: json lines in production).
logconfig_dict = gunicorn_logging_config()
# Each worker is replaced after about this many requests (the jitter keeps them from all
# restarting at once): a slow leak in any library cannot grow without bound.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "10000"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "1000"))
# Prometheus multiprocess mode (auditsvc.metrics): each worker writes its samples to files
# here, and a scrape of any worker adds them up. Set before the workers import the client; an
# empty value would make the client write into the working directory.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="auditsvc-metrics-")


def on_starting(server):  # type: ignore[no-untyped-def]
    """Refuse to start a production server that lacks a setting, before any worker boots;
    start the metrics from zero (files of an earlier server, or of this master's own checks,
    would be added in)."""
    from auditsvc.deployment import production_problem  # noqa: PLC0415

    if problem := production_problem():
        raise SystemExit(problem)
    if os.environ.get("AUDITSVC_ENV", "").strip().lower() == "production":
        _warn_of_a_database_role_that_can_rewrite(server)  # type: ignore[no-untyped-call]
    if os.environ.get("AUDITSVC_STREAM_URL") or os.environ.get("REDIS_URL"):
        _refuse_a_stream_that_could_lose_events()

    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def _set_up_django_in_the_master() -> None:
    import django  # noqa: PLC0415 - only production, or a server with a Redis, sets Django up in the master

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "auditsvc.settings")
    django.setup()


def _warn_of_a_database_role_that_can_rewrite(server):  # type: ignore[no-untyped-def]
    """The system check auditsvc.W020, which gunicorn does not run: said once, at start."""
    _set_up_django_in_the_master()
    from django.db import connections  # noqa: PLC0415

    from events.database_roles import connection_role_problem  # noqa: PLC0415

    if problem := connection_role_problem():
        server.log.warning("auditsvc.W020: %s (docs/operations.md, 'Database roles')", problem)
    connections.close_all()  # the workers open their own


def _refuse_a_stream_that_could_lose_events() -> None:
    """Stream mode on a Redis that could lose a 202, or accepted entries that no drainer of
    this configuration reads (shards were lowered, or stream mode was switched off)."""
    _set_up_django_in_the_master()
    from events.ingest import stream  # noqa: PLC0415

    problem = stream.durability_problem() or stream.stranded_problem()
    stream.forget_client()  # the workers open their own connections
    if problem:
        raise SystemExit(problem)


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    """AUDITSVC_AUTO_SEAL_SECONDS > 0: seal from a daemon thread in each worker (one at a
    time across workers, by the sealer's advisory lock) instead of from cron."""
    from events.integrity.autoseal import start_auto_sealing  # noqa: PLC0415 - Django is set up by now

    start_auto_sealing()


def worker_exit(server, worker):  # type: ignore[no-untyped-def]
    """A worker leaving gracefully (a shutdown, or recycled after max_requests) commits what its
    group committer still holds, and stores the reads it has recorded but not yet stored."""
    from events.access_log import stop_access_log  # noqa: PLC0415
    from events.ingest.group_commit import stop_group_commit  # noqa: PLC0415

    stop_group_commit()
    stop_access_log()


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    """A dead worker's live gauges leave the metrics (its counters stay counted)."""
    from prometheus_client import multiprocess  # noqa: PLC0415

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]

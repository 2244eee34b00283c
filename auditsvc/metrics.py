"""Prometheus metrics: counters and histograms kept by every gunicorn worker, served at /metrics.

Under gunicorn each worker writes its samples to files in PROMETHEUS_MULTIPROC_DIR
(prometheus-client's multiprocess mode; gunicorn.conf.py sets the directory up and tells the
client when a worker dies), and a scrape of any worker aggregates all of them. Outside
gunicorn (tests, manage.py) the process's own registry is served.

Gauges of the log's state (seal lag, stream lag) are not kept by workers: they are read from
the database and Redis when scraped, so they are right whichever worker answers.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import REGISTRY, Collector

from auditsvc.client_ip import is_trusted_proxy
from auditsvc.errors import json_error_response
from auditsvc.routes import route_of

logger = logging.getLogger(__name__)

EVENTS_INGESTED = Counter(
    "auditsvc_events_ingested_total",
    "Events the API accepted: stored (mode=direct) or queued in the stream (mode=stream).",
    ["source", "mode"],
)
REQUESTS = Counter(
    "auditsvc_http_requests_total",
    "HTTP requests answered, by route, method and status.",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "auditsvc_http_request_duration_seconds",
    "Time to answer a request, by route and method.",
    ["route", "method"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ERRORS = Counter(
    "auditsvc_http_errors_total", "Error answers of the API, by status and machine-readable code.", ["status", "code"]
)
DATABASE_ERRORS = Counter(
    "auditsvc_database_errors_total", "Requests that met an unavailable database (answered 503 database_unavailable)."
)

RATE_LIMIT_UNAVAILABLE = Counter(
    "auditsvc_rate_limit_unavailable_total",
    "Requests let through without a rate-limit count: the cache's Redis (REDIS_URL) was unreachable.",
)

READS_UNRECORDED = Counter(
    "auditsvc_reads_unrecorded_total",
    "Reads of the log that could not be recorded as auditsvc.read events (buffer full, or refused).",
)

SCHEMA_VIOLATIONS = Counter(
    "auditsvc_schema_violations_total",
    "Events stored although their payload failed their type's schema (validation=warn), by type.",
    ["type"],
)


def count_ingested(source: str, mode: str, events: int) -> None:
    if events:
        EVENTS_INGESTED.labels(source=source, mode=mode).inc(events)


class MetricsMiddleware:
    """Counts and times every request by its URL pattern (never the raw path: bounded labels)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        count_request(request, response.status_code, time.perf_counter() - started, getattr(response, "data", None))
        return response


def count_request(request: HttpRequest, status_code: int, seconds: float, data: Any) -> None:
    """One answered request, by route: timed, counted by status, and an API error by its code
    (data: the answer's body before rendering). The middleware and the accept path both count here."""
    route = route_of(request)
    REQUEST_SECONDS.labels(route=route, method=request.method).observe(seconds)
    REQUESTS.labels(route=route, method=request.method, status=str(status_code)).inc()
    if status_code >= 400:
        _count_error(status_code, data)


def _count_error(status_code: int, data: Any) -> None:
    """An API error answer by its first code (every one is rendered by auditsvc.api.exceptions)."""
    errors = data.get("errors") if isinstance(data, dict) else None
    if not errors:
        return
    code = errors[0].get("code", "error")
    ERRORS.labels(status=str(status_code), code=code).inc()
    if code == "database_unavailable":
        DATABASE_ERRORS.inc()


class LogStateCollector(Collector):
    """The log's state at scrape time: the age of the oldest unsealed event, and what other modules
    report (report_state)."""

    def collect(self) -> Iterator[Metric]:
        seal_lag = GaugeMetricFamily(
            "auditsvc_seal_lag_seconds", "Age of the oldest event that waits for a seal (0: none waits)."
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT greatest(0, extract(epoch FROM clock_timestamp() - min(received_at)))"
                    " FROM events_pendingseal WHERE received_at <= clock_timestamp()"  # as the health checks
                )
                (age,) = cursor.fetchone()
            seal_lag.add_metric([], float(age or 0.0))
            yield seal_lag
        except Exception:  # a scrape must answer even with the database away
            logger.warning("metrics: the seal lag could not be read", exc_info=True)
        for report in _state_reports:
            yield from report()


_state_reports: list[Callable[[], Iterator[Metric]]] = []


def report_state(report: Callable[[], Iterator[Metric]]) -> Callable[[], Iterator[Metric]]:
    """Registers report (gauges read at scrape time) with the log's state; the module that owns
    the state registers it (as events.ingest.stream does its lag), so this one imports none."""
    _state_reports.append(report)
    return report


def _registry() -> Any:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # as prometheus-client itself decides
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    return registry


_log_state = LogStateCollector()


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics: with AUDITSVC_METRICS_TOKEN, for its bearer from anywhere; without it,
    for a loopback client that came through no proxy, and in production for no one."""
    token = settings.AUDITSVC_METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return json_error_response(401, "not_authenticated", "Give Authorization: Bearer <AUDITSVC_METRICS_TOKEN>.")
    elif settings.PRODUCTION:
        return json_error_response(403, "metrics_token_required", "Set AUDITSVC_METRICS_TOKEN to serve metrics.")
    elif not _is_loopback(request.META.get("REMOTE_ADDR", "")) or _came_through_a_proxy(request):
        return json_error_response(
            403, "permission_denied",
            "Without AUDITSVC_METRICS_TOKEN, metrics are served to loopback clients that came through no proxy.",
        )  # fmt: skip
    output = generate_latest(_registry()) + generate_latest(_log_state)  # type: ignore[arg-type]
    return HttpResponse(output, content_type=CONTENT_TYPE_LATEST)


# A local reverse proxy connects from loopback on behalf of everyone; these headers say it did.
_PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP", "HTTP_VIA", "HTTP_X_FORWARDED_HOST")


def _came_through_a_proxy(request: HttpRequest) -> bool:
    return any(name in request.META for name in _PROXY_HEADERS) or is_trusted_proxy(request.META.get("REMOTE_ADDR", ""))


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False

"""GET /metrics: Prometheus text, parsed with prometheus-client's own parser after real requests."""

from __future__ import annotations

import http.client
import json
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from events.integrity.sealing import seal_events
from events.keys import create_api_key
from tests.factories import SourceFactory
from tests.paths import REPO_ROOT
from tests.processes import gunicorn

MONITORING = REPO_ROOT / "docs" / "monitoring"


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a /metrics answer."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metrics(client: APIClient | None = None, **extra: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = (client or APIClient()).get("/metrics", **extra)
    assert response.status_code == 200, response.content
    return scrape(response.content.decode())


INGESTED = ("auditsvc_events_ingested_total", (("mode", "direct"), ("source", "billing")))
CREATED = ("auditsvc_http_requests_total", (("method", "POST"), ("route", "/api/v1/events"), ("status", "201")))
INVALID = ("auditsvc_http_errors_total", (("code", "required"), ("status", "400")))


def test_ingest_requests_errors_and_the_seal_lag_are_counted(api, settings):
    settings.AUDITSVC_SEAL_LAG_SECONDS = 0
    before = metrics()

    assert api.post_json("/api/v1/events", {"type": "a.b"}).status_code == 201
    assert api.post_json("/api/v1/events", {"events": [{"type": "a.b"}] * 3}).status_code == 201
    assert api.post_json("/api/v1/events", {"payload": {}}).status_code == 400  # no type
    after = metrics()

    assert after[INGESTED] - before.get(INGESTED, 0) == 4
    assert after[CREATED] - before.get(CREATED, 0) == 2
    assert after[INVALID] - before.get(INVALID, 0) == 1
    histogram = ("auditsvc_http_request_duration_seconds_count", (("method", "POST"), ("route", "/api/v1/events")))
    assert after[histogram] - before.get(histogram, 0) == 3
    assert after[("auditsvc_seal_lag_seconds", ())] > 0  # four events wait for a seal
    seal_events()
    assert metrics()[("auditsvc_seal_lag_seconds", ())] == 0


def test_only_loopback_clients_may_scrape_without_a_token(db):
    response = APIClient().get("/metrics", REMOTE_ADDR="10.1.2.3")

    assert response.status_code == 403
    assert response.json()["errors"][0]["code"] == "permission_denied"


@pytest.mark.parametrize(
    "header", ["HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP", "HTTP_VIA", "HTTP_X_FORWARDED_HOST"]
)
def test_a_local_reverse_proxy_is_not_a_loopback_client(db, header):
    """Behind nginx on the same host every request comes from 127.0.0.1: the header gives it away."""
    assert APIClient().get("/metrics").status_code == 200

    response = APIClient().get("/metrics", None, False, **{header: "203.0.113.9"})

    assert response.status_code == 403 and response.json()["errors"][0]["code"] == "permission_denied"


def test_a_trusted_proxy_on_loopback_is_not_a_loopback_client(db, settings):
    settings.AUDITSVC_TRUSTED_PROXIES = ["127.0.0.1"]

    assert APIClient().get("/metrics").status_code == 403


def test_with_a_token_its_bearer_may_scrape_from_anywhere(db, settings):
    settings.AUDITSVC_METRICS_TOKEN = "s3cret-token"

    assert APIClient().get("/metrics").status_code == 401  # loopback is not enough then
    assert APIClient().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert metrics(REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer s3cret-token")


def test_in_production_metrics_need_the_token(db, settings):
    settings.PRODUCTION = True

    response = APIClient().get("/metrics")

    assert response.status_code == 403
    assert response.json()["errors"][0]["code"] == "metrics_token_required"


@pytest.mark.django_db(transaction=True)  # the server reads committed rows
def test_under_gunicorn_every_worker_answers_for_all_of_them(tmp_path):
    key = create_api_key(source=SourceFactory.create(slug="billing"), scopes=["ingest"]).plaintext
    with gunicorn(workers=2, PROMETHEUS_MULTIPROC_DIR=str(tmp_path)) as url:
        parts = urlsplit(url)
        for n in range(40):  # a new connection each: both workers take some
            connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            connection.request(
                "POST", "/api/v1/events", body=f'{{"type": "a.b", "payload": {{"n": {n}}}}}', headers=headers
            )
            assert connection.getresponse().status == 201
            connection.close()
        scrapes = []
        for _ in range(6):
            connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
            connection.request("GET", "/metrics")
            scrapes.append(scrape(connection.getresponse().read().decode()))
            connection.close()

    writers = {path.name.rsplit("_", 1)[-1] for path in tmp_path.glob("counter_*.db")}
    assert len(writers) == 2  # both workers counted events...
    assert {s[INGESTED] for s in scrapes} == {40.0}  # ...and every scrape adds them all up


def test_in_stream_mode_accepted_events_and_the_stream_lag_are_shown(api, stream_mode):
    key = ("auditsvc_events_ingested_total", (("mode", "stream"), ("source", "billing")))
    before = metrics()

    assert api.post_json("/api/v1/events", {"type": "a.b"}).status_code == 202
    after = metrics()

    assert after[key] - before.get(key, 0) == 1
    assert after[("auditsvc_stream_lag_entries", ())] == 1  # this test's own stream prefix
    assert after[("auditsvc_stream_lag_seconds", ())] >= 0


def test_the_dashboard_and_the_alert_rules_use_only_metrics_that_exist(api, stream_mode):
    api.post_json("/api/v1/events", {"type": "a.b"})
    api.post_json("/api/v1/events", {"payload": {}})
    served = {name for name, _ in metrics()}
    rules = yaml.safe_load((MONITORING / "prometheus-alerts.yml").read_text())
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    expressions += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]

    used = {name for expr in expressions for name in re.findall(r"auditsvc_[a-z_]+", expr)}

    assert len(expressions) >= 12 and len(used) >= 6
    assert used <= served, used - served


@pytest.mark.django_db(transaction=True)
def test_requests_that_meet_an_unavailable_database_are_counted(tmp_path):
    from bench.server import free_port  # noqa: PLC0415

    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/none"  # nothing listens there
    with gunicorn(DATABASE_URL=nowhere, DB_CONNECT_TIMEOUT="1", PROMETHEUS_MULTIPROC_DIR=str(tmp_path)) as url:
        parts = urlsplit(url)
        statuses = []
        for _ in range(3):
            client = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=20)
            headers = {"Authorization": "Bearer audit_abcdefghij_x", "Content-Type": "application/json"}
            client.request("POST", "/api/v1/events", body='{"type": "a.b"}', headers=headers)
            response = client.getresponse()
            statuses.append((response.status, json.loads(response.read())["errors"][0]["code"]))
            client.close()
        client = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=20)
        client.request("GET", "/metrics")
        scraped = scrape(client.getresponse().read().decode())

    assert statuses == [(503, "database_unavailable")] * 3
    assert scraped[("auditsvc_database_errors_total", ())] == 3
    assert scraped[("auditsvc_http_errors_total", (("code", "database_unavailable"), ("status", "503")))] == 3

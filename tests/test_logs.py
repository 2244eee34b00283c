"""Logs and alerts: JSON lines from a real gunicorn, the request id, error mails, Sentry."""

from __future__ import annotations

import dataclasses
import gzip
import http.client
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
import sentry_sdk
from django.core import mail
from django.test import Client
from rest_framework.test import APIClient

from auditsvc import alerts, health, logs
from events.keys import create_api_key
from tests.factories import SourceFactory
from tests.processes import gunicorn


def request(url: str, method: str, path: str, body: str | None = None, **headers: str) -> http.client.HTTPResponse:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


@pytest.mark.django_db(transaction=True)  # the server reads committed rows
def test_in_json_format_every_line_is_an_object_and_a_request_says_who_and_how_long(tmp_path):
    key = create_api_key(source=SourceFactory.create(slug="billing"), scopes=["ingest", "read"])
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("wb") as log, gunicorn(stderr=log, LOG_FORMAT="json") as url:
        auth = {"Authorization": f"Bearer {key.plaintext}", "Content-Type": "application/json"}
        body = '{"type": "a.b", "payload": {"card": "PAYLOAD-MARKER-4242"}}'
        created = request(url, "POST", "/api/v1/events", body, **auth, **{"X-Request-ID": "upstream-id-1"})
        listed = request(url, "GET", "/api/v1/events?actor=QUERY-MARKER", **auth)
        forged = request(url, "GET", "/healthz", **{"X-Request-ID": "two words\tand a tab"})
    lines = log_path.read_text().splitlines()

    records = [json.loads(line) for line in lines]  # every line, gunicorn's own included
    requests = {r["request_id"]: r for r in records if r.get("event") == "request_finished"}
    assert created.status == 201 and created.headers["X-Request-ID"] == "upstream-id-1"
    post = requests["upstream-id-1"]
    assert post["method"] == "POST" and post["route"] == "/api/v1/events" and post["status"] == 201
    assert post["key_prefix"] == key.api_key.prefix and post["source"] == "billing"
    assert 0 < post["duration_ms"] < 10_000
    made_up = listed.headers["X-Request-ID"]
    assert len(made_up) == 32 and requests[made_up]["status"] == 200
    assert forged.headers["X-Request-ID"] != "two words\tand a tab" and forged.headers["X-Request-ID"] in requests
    assert any(r["logger"] == "gunicorn.error" for r in records)
    text = log_path.read_text()
    for secret in (key.plaintext, "PAYLOAD-MARKER", "QUERY-MARKER", "Bearer"):
        assert secret not in text


def test_every_answer_carries_its_request_id(db):
    given = APIClient().get("/healthz", HTTP_X_REQUEST_ID="abc.123")
    made = APIClient().get("/healthz")

    assert given["X-Request-ID"] == "abc.123"
    assert len(made["X-Request-ID"]) == 32 and made["X-Request-ID"] != given["X-Request-ID"]


def test_text_format_is_readable_lines(db, tmp_path):
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("wb") as log, gunicorn(stderr=log, LOG_FORMAT="text") as url:
        request(url, "GET", "/healthz", **{"X-Request-ID": "text-id-7"})
    line = next(line for line in log_path.read_text().splitlines() if "request_id=text-id-7" in line)

    assert not line.startswith("{")
    assert "request_finished" in line and "route=/healthz" in line and "status=200" in line


class ReadinessBroke(RuntimeError):
    """Raised inside /readyz to make an unhandled error (each test its own kind)."""


class ReadinessBrokeAgain(RuntimeError):
    pass


class ReadinessBrokeForSentry(RuntimeError):
    pass


def break_readiness(monkeypatch: pytest.MonkeyPatch, error: type[Exception]) -> None:
    def fail() -> int:
        payload = {"email": "frame-local@example.com"}  # a frame's variable, as a payload would be
        raise error(f"the migration table is unreadable ({len(payload)})")

    monkeypatch.setattr(health, "_pending_migrations", fail)


def test_an_unhandled_error_is_mailed_to_the_admins_without_secrets(db, settings, monkeypatch):
    settings.ADMINS = alerts.admin_addresses("Ops <ops@example.com>, dev@example.com")
    break_readiness(monkeypatch, ReadinessBroke)
    client = Client(raise_request_exception=False)

    response = client.get("/readyz?email=query@example.com&actor=alice", HTTP_AUTHORIZATION="Bearer sk-live-SECRET",
                          HTTP_X_CUSTOMER="header@example.com", HTTP_COOKIE="sessionid=cookie-value")  # fmt: skip

    assert response.status_code == 500
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ops@example.com", "dev@example.com"]
    assert "ReadinessBroke" in message.body and "/readyz" in message.subject
    assert "GET /readyz" in message.body and "in fail" in message.body  # where, and the traceback
    everything = f"{message.subject} {message.body} {getattr(message, 'alternatives', '')}"
    for private in ("SECRET", "query@example.com", "alice", "header@example.com", "cookie-value",
                    "frame-local@example.com"):  # fmt: skip
        assert private not in everything, private


def test_a_repeated_error_is_mailed_once_per_interval(db, settings, monkeypatch):
    settings.ADMINS = [("Ops", "ops@example.com")]
    break_readiness(monkeypatch, ReadinessBrokeAgain)
    client = Client(raise_request_exception=False)

    for _ in range(3):
        assert client.get("/readyz").status_code == 500
    assert len(mail.outbox) == 1

    settings.AUDITSVC_ERROR_MAIL_INTERVAL_SECONDS = 0
    client.get("/readyz")
    assert len(mail.outbox) == 2


def test_admin_addresses_are_checked_at_start_up():
    assert alerts.admin_addresses("") == []
    assert alerts.admin_addresses("a@example.com") == [("a@example.com", "a@example.com")]
    with pytest.raises(Exception, match="not an email address"):
        alerts.admin_addresses("ops, dev@example.com")


class SentryServer:
    """A local stand-in for Sentry's ingest endpoint: keeps every envelope it is sent."""

    def __init__(self) -> None:
        self.envelopes: list[bytes] = []
        received = self.envelopes

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                received.append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.dsn = f"http://publickey@127.0.0.1:{self.server.server_port}/1"


@pytest.fixture
def sentry() -> Iterator[SentryServer]:
    server = SentryServer()
    alerts.start_sentry(server.dsn, environment="test", traces_sample_rate=0.0)
    yield server
    sentry_sdk.get_client().close()
    sentry_sdk.init()  # no DSN: reports go nowhere again
    server.server.shutdown()


def test_with_a_dsn_errors_reach_sentry_without_the_body_or_the_key(db, sentry, monkeypatch):
    break_readiness(monkeypatch, ReadinessBrokeForSentry)
    client = Client(raise_request_exception=False)

    client.cookies["sessionid"] = "COOKIE-SECRET"
    response = client.post(
        "/readyz?actor=QUERY-MARKER",
        '{"card": "PAYLOAD-MARKER-4242"}',
        content_type="application/json",
        HTTP_AUTHORIZATION="Bearer sk-live-SECRET-IN-HEADER",
    )
    sentry_sdk.flush(timeout=5)

    assert response.status_code == 500
    sent = b"".join(sentry.envelopes).decode()
    assert "ReadinessBrokeForSentry" in sent and '"environment":"test"' in sent.replace(" ", "")
    for secret in ("SECRET-IN-HEADER", "COOKIE-SECRET", "PAYLOAD-MARKER", "QUERY-MARKER"):
        assert secret not in sent


@dataclasses.dataclass
class _Secret:
    value: str

    def __str__(self) -> str:
        return "Secret(***)"


def test_a_json_line_writes_values_as_their_str_would_redact_them():
    line = json.loads(
        logs._json_line({"token": _Secret("hunter2"), "at": datetime(2026, 1, 2, tzinfo=UTC), "n": 2**70})
    )

    assert line == {"token": "Secret(***)", "at": "2026-01-02 00:00:00+00:00", "n": 2**70}

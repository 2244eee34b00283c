"""The accept path (events.api.accept): a service's POST /api/v1/events answered in front of
Django, the same answer Django's middleware and DRF give, and every other request passed on.

Every other ingest test runs through the accept path too (tests/conftest.py sends the test
clients where auditsvc.wsgi sends a request); these tests show that it does, that it answers
exactly as Django would, and that what it cannot answer alike goes to Django.
"""

from __future__ import annotations

import gzip
import http.client
import json
import logging
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core.handlers.base import BaseHandler
from django.db import OperationalError
from rest_framework.test import APIClient

from events.api import accept, ingest_endpoint
from events.keys import create_api_key, revoke_api_key
from events.models import Event
from tests.factories import SourceFactory
from tests.processes import gunicorn

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("production_write_path")]

URL = "/api/v1/events"
# Differ between any two answers: made per request.
PER_REQUEST_HEADERS = {"X-Request-ID"}
PER_EVENT_FIELDS = {"id", "received_at", "hash", "occurred_at", "origin", "idempotency_key"}  # a CloudEvent: its id


@pytest.fixture
def django_views(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests that reached Django's URL resolver and views."""
    reached: list[str] = []
    through_django = BaseHandler._get_response  # type: ignore[attr-defined]

    def recording(handler: BaseHandler, request: Any) -> Any:
        reached.append(f"{request.method} {request.path}")
        return through_django(handler, request)

    monkeypatch.setattr(BaseHandler, "_get_response", recording)
    return reached


@pytest.fixture
def answered_in_front(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests the accept path answered."""
    answered: list[str] = []
    answer = accept.AcceptPath.answer

    def recording(accept_path: accept.AcceptPath, request: Any) -> Any:
        answered.append(f"{request.method} {request.path}")
        return answer(accept_path, request)

    monkeypatch.setattr(accept.AcceptPath, "answer", recording)
    return answered


def test_a_services_post_never_reaches_django_and_other_requests_do(api, django_views, answered_in_front):
    created = api.post_json(URL, {"type": "invoice.paid", "payload": {"n": 1}})
    listed = api.client.get(URL)

    assert created.status_code == 201, created.content
    assert Event.objects.get().payload == {"n": 1}
    assert listed.status_code == 200 and len(listed.json()["results"]) == 1
    assert django_views == [f"GET {URL}"] and answered_in_front == [f"POST {URL}"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"HTTP_ACCEPT": "text/html"}, 406),  # DRF's negotiation refuses it
        ({"HTTP_ACCEPT": "application/json; indent=4"}, 201),  # DRF answers with that Content-Type
        ({"HTTP_HOST": "evil.example"}, 400),  # not in ALLOWED_HOSTS
        ({"authorization": "Token abc"}, 401),  # not a Bearer key: DRF's other authenticators
        ({"HTTP_COOKIE": "csrftoken=bad; sessionid=gone"}, 201),  # Django's middleware answers cookies
    ],
    ids=["not-json", "json-with-parameters", "disallowed-host", "not-bearer", "cookies"],
)
def test_what_it_cannot_answer_alike_goes_to_django(api, answered_in_front, headers, status):
    if "authorization" in headers:
        api.client.credentials(HTTP_AUTHORIZATION=headers.pop("authorization"))
    response = api.client.post(URL, {"type": "a.b"}, format="json", **headers)

    assert response.status_code == status
    assert answered_in_front == []


def test_a_session_or_no_credentials_go_to_django(db, answered_in_front, staff_with):
    anonymous = APIClient().post(URL, {"type": "a.b"}, format="json")
    session = APIClient()
    session.force_login(staff_with("auditor", "view_event"))
    signed_in = session.post(URL, {"type": "a.b"}, format="json")

    assert anonymous.status_code == 401 and signed_in.status_code == 403
    assert answered_in_front == []


def _answer(response: Any) -> tuple[int, dict[str, str], Any]:
    headers = {name: value for name, value in response.items() if name not in PER_REQUEST_HEADERS}
    body = response.json() if response.content else None
    return response.status_code, headers, _without_per_event_fields(body)


def _without_per_event_fields(body: Any) -> Any:
    if isinstance(body, dict):
        return {key: _without_per_event_fields(value) for key, value in body.items() if key not in PER_EVENT_FIELDS}
    if isinstance(body, list):
        return [_without_per_event_fields(value) for value in body]
    return body


def _requests(round_: int, key_without_scope: str, revoked_key: str) -> dict[str, dict[str, Any]]:
    """A request for each kind of answer the endpoint gives, as test-client arguments."""
    client_json = {"content_type": "application/json"}
    return {
        "created": {"data": json.dumps({"type": "a.b", "payload": {"n": 1}}), **client_json},
        "batch": {"data": json.dumps({"events": [{"type": "a.b"}, {"type": "a.c"}]}), **client_json},
        "invalid": {"data": json.dumps({"type": "", "occurred_at": "2026-13-01", "surprise": 1}), **client_json},
        "malformed": {"data": '{"type": ', **client_json},
        "nul": {"data": '{"type": "a.b", "payload": {"x": "\\u0000"}}', **client_json},
        "reserved": {"data": json.dumps({"type": "auditsvc.read"}), **client_json},
        "not-json": {"data": "type=a.b", "content_type": "application/x-www-form-urlencoded"},
        "too-large": {"data": json.dumps({"type": "a.b", "payload": {"x": "y" * 2_000_000}}), **client_json},
        "gzip": {
            "data": gzip.compress(json.dumps({"type": "a.gz"}).encode()),
            "HTTP_CONTENT_ENCODING": "gzip",
            **client_json,
        },
        "cloudevent": {
            "data": json.dumps({"specversion": "1.0", "id": f"c-{round_}", "source": "/x", "type": "a.ce"}),
            "content_type": "application/cloudevents+json",
        },
        "unknown-key": {"data": "{}", "authorization": "Bearer ak_nothere_0000", **client_json},
        "malformed-authorization": {"data": "{}", "authorization": "Bearer a b", **client_json},
        "revoked-key": {"data": "{}", "authorization": f"Bearer {revoked_key}", **client_json},
        "no-ingest-scope": {"data": "{}", "authorization": f"Bearer {key_without_scope}", **client_json},
    }


def _post(api: Any, arguments: dict[str, Any]) -> Any:
    """POST with the api client's key, or with another Authorization ("authorization")."""
    arguments = dict(arguments)
    if "authorization" not in arguments:
        return api.client.post(URL, **arguments)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=arguments.pop("authorization"))
    return client.post(URL, **arguments)


def test_both_paths_give_the_same_answers_header_for_header(api, settings):
    reader = create_api_key(source=api.source, scopes=["read"]).plaintext
    revoked = create_api_key(source=api.source, scopes=["ingest"]).plaintext
    revoke_api_key(prefix=revoked.split("_")[1])
    settings.AUDITSVC_MAX_BODY_BYTES = 1_000_000

    answers: dict[bool, dict[str, tuple[int, dict[str, str], Any]]] = {}
    for in_front in (False, True):
        settings.AUDITSVC_ACCEPT_PATH = in_front
        answers[in_front] = {
            name: _answer(_post(api, arguments))
            for name, arguments in _requests(int(in_front), reader, revoked).items()
        }

    statuses = {name: answer[0] for name, answer in answers[True].items()}
    assert statuses["created"] == 201 and statuses["invalid"] == 400 and statuses["too-large"] == 413
    assert statuses["unknown-key"] == 401 and statuses["no-ingest-scope"] == 403 and statuses["not-json"] == 415
    for name, by_django in answers[False].items():
        answered_in_front = answers[True][name]
        if name in ("created", "batch", "gzip", "cloudevent"):  # Django's stored them; the second is new
            assert answered_in_front[0] == by_django[0] == 201, name
        assert answered_in_front == by_django, name


def test_a_retry_a_conflict_and_a_rate_limit_answer_alike(make_client, settings):
    settings.AUDITSVC_RATE_LIMIT_PER_MINUTE = 3
    answers = {}
    for in_front in (False, True):
        settings.AUDITSVC_ACCEPT_PATH = in_front
        client = make_client(f"source-{int(in_front)}")  # a key each: its own rate count
        first = client.post_json(URL, {"type": "a.b", "idempotency_key": "k-1"})
        retried = client.post_json(URL, {"type": "a.b", "idempotency_key": "k-1"})
        conflict = client.post_json(URL, {"type": "a.c", "idempotency_key": "k-1"})
        limited = client.post_json(URL, {"type": "a.b", "idempotency_key": "k-1"})
        assert first.status_code == 201
        answers[in_front] = [_answer(retried), _answer(conflict), _answer(limited)]
        answers[in_front][0][2]["source"] = "-"
        answers[in_front][2][1]["Retry-After"] = "-"  # seconds to the minute's end
        answers[in_front][2][2]["errors"][0]["message"] = "-"

    assert answers[True] == answers[False]
    assert [answer[0] for answer in answers[True]] == [200, 409, 429]
    assert answers[True][2][2]["errors"][0]["code"] == "rate_limited"
    assert Event.objects.count() == 2


def test_an_unexpected_error_is_djangos_500_logged_as_django_logs_it(api, monkeypatch, caplog):
    def broken(request: Any, api_key: Any) -> Any:
        raise RuntimeError("the write path broke")

    monkeypatch.setattr("events.api.accept.post_events", broken)
    api.client.raise_request_exception = False

    with caplog.at_level(logging.INFO):
        response = api.post_json(URL, {"type": "a.b"})

    assert response.status_code == 500
    assert response.json() == {
        "errors": [{"field": None, "code": "server_error", "message": "Internal error; it has been logged."}]
    }
    assert len(response["X-Request-ID"]) == 32
    failure = next(record for record in caplog.records if record.name == "django.request")
    assert failure.exc_info is not None and "the write path broke" in str(failure.exc_info[1])
    lines = [record.msg for record in caplog.records if record.name == "django_structlog.middlewares.request"]
    assert [line["event"] for line in lines if isinstance(line, dict)] == ["request_failed"]
    assert ingest_endpoint.post_events is not broken  # only the accept path's name was replaced


def test_under_gunicorn_a_chunked_body_and_a_keep_alive_connection_are_served(db):
    key = create_api_key(source=SourceFactory.create(slug="billing"), scopes=["ingest"]).plaintext
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with gunicorn() as url:
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        statuses = []
        for n in range(3):  # one connection, three requests
            connection.request("POST", URL, body=json.dumps({"type": "a.keep", "payload": {"n": n}}), headers=auth)
            answer = connection.getresponse()
            answer.read()
            statuses.append(answer.status)
        connection.close()
        chunks = iter([b'{"type": "a.chunked",', b' "payload": {"n": 9}}'])
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        connection.request("POST", URL, body=chunks, headers=auth, encode_chunked=True)
        chunked = connection.getresponse()
        chunked.read()
        connection.close()

    assert statuses == [201, 201, 201]
    assert chunked.status == 201
    assert sorted(e.payload["n"] for e in Event.objects.all()) == [0, 1, 2, 9]


@pytest.mark.parametrize("in_front", [True, False], ids=["accept-path", "django"])
def test_an_answered_outage_is_logged_for_the_admins_as_django_logs_it(api, monkeypatch, caplog, settings, in_front):
    def database_away(request: Any, api_key: Any) -> Any:
        raise OperationalError("connection refused")

    settings.AUDITSVC_ACCEPT_PATH = in_front
    monkeypatch.setattr("events.api.accept.post_events", database_away)
    monkeypatch.setattr("events.api.views.post_events", database_away)

    with caplog.at_level(logging.INFO):
        response = api.post_json(URL, {"type": "a.b"})

    assert response.status_code == 503 and response["Retry-After"] == "5"
    mailed = [record for record in caplog.records if record.name == "django.request"]
    assert [(record.levelname, record.getMessage()) for record in mailed] == [("ERROR", f"Service Unavailable: {URL}")]

"""Chunked request bodies (no Content-Length) through a real gunicorn: read, and capped."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from events.keys import create_api_key
from events.models import Event
from tests.factories import SourceFactory
from tests.processes import gunicorn

pytestmark = pytest.mark.django_db(transaction=True)  # gunicorn reads what the test committed


@pytest.fixture
def service() -> Iterator[tuple[str, str]]:
    key = create_api_key(source=SourceFactory.create(slug="billing"), scopes=["ingest"]).plaintext
    with gunicorn(AUDITSVC_MAX_BODY_BYTES="2048") as url:
        yield url, key


def post_chunked(url: str, key: str, chunks: list[bytes]) -> tuple[int, dict[str, object]]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    connection.request("POST", "/api/v1/events", body=iter(chunks), headers=headers, encode_chunked=True)
    response = connection.getresponse()
    result = response.status, json.loads(response.read())
    connection.close()
    return result


def test_a_chunked_body_is_read(service):
    url, key = service
    body = json.dumps({"type": "billing.charged", "payload": {"note": "x" * 500}}).encode()

    status, answer = post_chunked(url, key, [body[:100], body[100:]])

    assert status == 201, answer
    assert Event.objects.filter(type__name="billing.charged").count() == 1


def test_a_chunked_body_over_the_cap_is_refused_whole(service):
    url, key = service
    body = json.dumps({"type": "billing.charged", "payload": {"note": "x" * 3000}}).encode()

    status, answer = post_chunked(url, key, [body[i : i + 512] for i in range(0, len(body), 512)])

    assert status == 413
    assert answer["errors"][0]["code"] == "body_too_large"  # type: ignore[index]
    assert not Event.objects.exists()

"""A cache outage is not an outage: with the cache's Redis (REDIS_URL, direct mode) killed,
rate limits fail open, logged once per outage and counted, and ingest and reads go on."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from auditsvc.api import throttling
from events.models import Event
from tests.redis_servers import RedisServer, redis_server

# Single events go through the group commit, as in production, only outside a transaction.
pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/events"
UNCOUNTED = "auditsvc_rate_limit_unavailable_total"
OUTAGE = "rate limits: the cache's Redis is unreachable"
RECOVERY = "rate limits: the cache's Redis answers again"


@pytest.fixture
def cache_redis(settings: Any, tmp_path: Any) -> Iterator[RedisServer]:
    """The shared cache (rate-limit counters) on a redis-server of this test's own, to kill."""
    with redis_server(tmp_path, "--appendonly", "no") as server:
        settings.CACHES = {
            "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": server.url}
        }
        yield server


def uncounted() -> float:
    return REGISTRY.get_sample_value(UNCOUNTED) or 0.0


def logged(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in record.getMessage() for record in caplog.records)


def test_it_stores_and_reads_with_the_cache_redis_killed(api, cache_redis, caplog, client):
    assert api.post_json(URL, {"type": "a.b"}).status_code == 201  # counted in Redis
    cache_redis.kill()
    before = uncounted()

    with caplog.at_level(logging.INFO, logger="auditsvc.api.throttling"):
        singles = [api.post_json(URL, {"type": "a.b", "payload": {"n": n}}).status_code for n in range(3)]
        batch = api.post_json(URL, {"events": [{"type": "a.b"}, {"type": "c.d"}]})
        reads = [api.client.get(URL).status_code for _ in range(2)]
        ready = client.get("/readyz")

    assert singles == [201, 201, 201]
    assert batch.status_code == 201
    assert reads == [200, 200]
    assert Event.objects.count() == 6
    assert uncounted() - before == 6  # every request after the kill went through uncounted
    assert logged(caplog, OUTAGE) == 1  # once for the outage, not once per request
    assert ready.status_code == 200  # every instance shares the cache: none is taken out for it
    assert ready.json()["cache"] == "unreachable"


def test_unknown_keys_are_refused_uncounted_with_the_cache_redis_killed(db, cache_redis, settings):
    settings.AUDITSVC_UNKNOWN_KEY_LIMIT_PER_MINUTE = 1
    guesser = APIClient()
    guesser.credentials(HTTP_AUTHORIZATION=f"Bearer audit_{secrets.token_hex(5)}_{secrets.token_urlsafe(32)}")
    cache_redis.kill()
    before = uncounted()

    statuses = [guesser.get(URL).status_code for _ in range(3)]

    assert statuses == [401, 401, 401]  # neither 429 (nothing counted) nor 503
    assert uncounted() - before == 3


def test_limits_count_again_once_the_cache_redis_is_back_and_each_outage_is_logged(
    api, cache_redis, caplog, settings, monkeypatch
):
    settings.AUDITSVC_RATE_LIMIT_PER_MINUTE = 2
    monkeypatch.setattr(throttling, "RETRY_SECONDS", 0.0)  # every request tries Redis again

    with caplog.at_level(logging.INFO, logger="auditsvc.api.throttling"):
        cache_redis.kill()
        down = [api.post_json(URL, {"type": "a.b"}).status_code for _ in range(4)]
        cache_redis.start()  # empty: the counters of the outage are gone with it
        back = [api.post_json(URL, {"type": "a.b"}).status_code for _ in range(3)]
        outages_then = logged(caplog, OUTAGE)
        cache_redis.kill()
        again = api.post_json(URL, {"type": "a.b"}).status_code

    assert down == [201, 201, 201, 201]  # past the limit: nothing could count them
    assert back == [201, 201, 429]
    assert outages_then == 1
    assert logged(caplog, RECOVERY) == 1
    assert again == 201
    assert logged(caplog, OUTAGE) == 2  # a new outage, logged anew

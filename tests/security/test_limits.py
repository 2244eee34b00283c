"""Rate limits per API key and per unknown key, body caps, and the production settings' checks."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from events.checks import check_trusted_proxies
from events.models import Event
from tests.paths import REPO_ROOT

ROOT = REPO_ROOT


def cache_backend(**environment: str) -> str:
    code = "import os; os.environ['DJANGO_SETTINGS_MODULE'] = 'auditsvc.settings'\n" \
           "from django.conf import settings; print(settings.CACHES['default']['BACKEND'])"  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | environment
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_counters_are_shared_through_redis_when_redis_url_is_set():
    assert cache_backend(REDIS_URL="redis://127.0.0.1:6379/0").endswith("RedisCache")
    assert cache_backend().endswith("LocMemCache")
    # CI runs with REDIS_URL, so there the suite's limits and lockouts go through Redis itself.
    assert django_settings.CACHES["default"]["BACKEND"].endswith(
        "RedisCache" if os.environ.get("REDIS_URL") else "LocMemCache"
    )


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(api, settings):
    settings.AUDITSVC_RATE_LIMIT_PER_MINUTE = 3

    statuses = [api.post_json("/api/v1/events", {"type": "a.b"}).status_code for _ in range(3)]
    limited = api.post_json("/api/v1/events", {"type": "a.b"})

    assert statuses == [201, 201, 201]
    assert limited.status_code == 429
    assert 0 < int(limited["Retry-After"]) <= 60
    assert limited.json()["errors"][0]["code"] == "rate_limited"
    assert Event.objects.count() == 3


def test_limits_are_per_key(make_client, settings):
    settings.AUDITSVC_RATE_LIMIT_PER_MINUTE = 1
    first, second = make_client("billing"), make_client("shipping")

    assert first.post_json("/api/v1/events", {"type": "a.b"}).status_code == 201
    assert first.post_json("/api/v1/events", {"type": "a.b"}).status_code == 429
    assert second.post_json("/api/v1/events", {"type": "a.b"}).status_code == 201


def test_the_body_cap_applies_before_parsing(api, settings):
    settings.AUDITSVC_MAX_BODY_BYTES = 1024
    response = api.client.generic("POST", "/api/v1/events", b"[" * 5000, content_type="application/json")

    assert response.status_code == 413


@pytest.mark.parametrize("tls", ["true", "false"])
def test_check_deploy_is_clean_with_production_settings(tls):
    env = {**os.environ, "SECRET_KEY": secrets.token_urlsafe(50), "DEBUG": "false", "SECURE_TLS": tls}
    env["ALLOWED_HOSTS"] = "audit.example.com"
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip

    if tls == "true":
        assert result.returncode == 0, result.stdout + result.stderr
    else:  # without TLS, Django rightly warns about HSTS, secure cookies and redirects
        assert "security.W004" in result.stdout + result.stderr


def test_check_deploy_warns_without_a_secret_key():
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "SECRET_KEY_FILE")}
    env.update({"SECURE_TLS": "true", "ALLOWED_HOSTS": "audit.example.com"})
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=False)  # fmt: skip

    assert "auditsvc.W001" in result.stdout + result.stderr


def test_unknown_keys_are_rate_limited_per_client_address(db, settings):
    settings.AUDITSVC_UNKNOWN_KEY_LIMIT_PER_MINUTE = 3
    guesser, other = APIClient(REMOTE_ADDR="203.0.113.5"), APIClient(REMOTE_ADDR="198.51.100.7")
    for client in (guesser, other):
        client.credentials(HTTP_AUTHORIZATION=f"Bearer audit_{secrets.token_hex(5)}_{secrets.token_urlsafe(32)}")

    statuses = [guesser.get("/api/v1/events").status_code for _ in range(3)]
    limited = guesser.get("/api/v1/events")

    assert statuses == [401, 401, 401]
    assert limited.status_code == 429
    assert limited.json()["errors"][0]["code"] == "rate_limited"
    assert 0 < int(limited["Retry-After"]) <= 60
    assert other.get("/api/v1/events").status_code == 401  # another address has its own count


def test_a_malformed_key_counts_as_unknown(db, settings):
    settings.AUDITSVC_UNKNOWN_KEY_LIMIT_PER_MINUTE = 1
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer not-a-key")

    assert [client.get("/api/v1/events").status_code for _ in range(2)] == [401, 429]


def test_a_bad_trusted_proxy_is_a_configuration_error(settings):
    settings.AUDITSVC_TRUSTED_PROXIES = ["10.0.0.0/8", "proxy.internal"]

    errors = check_trusted_proxies(None)

    assert [(e.id, e.msg) for e in errors] == [
        ("auditsvc.E002", "AUDITSVC_TRUSTED_PROXIES: 'proxy.internal' is not an IP address or network.")
    ]

"""Rate limits per API key, the admin login lockout, and the production settings' checks."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client

from events.models import Event
from tests.paths import REPO_ROOT

ROOT = REPO_ROOT


def test_the_cache_is_redis_in_ci():
    if os.environ.get("CI") == "true":
        assert django_settings.CACHES["default"]["BACKEND"].endswith("RedisCache")


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


def test_admin_login_locks_after_repeated_failures(db, settings):
    settings.AUDITSVC_LOGIN_MAX_FAILURES = 5
    User.objects.create_superuser("root", password="the right password")
    client = Client()

    failures = [
        client.post("/admin/login/", {"username": "root", "password": f"guess {n}"}).status_code for n in range(5)
    ]
    locked = client.post("/admin/login/", {"username": "root", "password": "the right password"})

    assert failures == [200] * 5  # the form again, with an error
    assert locked.status_code == 429
    assert locked["Retry-After"]
    assert "_auth_user_id" not in client.session


def test_a_successful_login_clears_the_failures(db, settings):
    settings.AUDITSVC_LOGIN_MAX_FAILURES = 3
    User.objects.create_superuser("root", password="the right password")
    client = Client()
    for n in range(2):
        client.post("/admin/login/", {"username": "root", "password": f"guess {n}"})

    ok = client.post("/admin/login/", {"username": "root", "password": "the right password"})

    assert ok.status_code == 302


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

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from events.models import ApiKey, Event, Source


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_create_source_then_key_then_ingest_then_revoke(db):
    run("create_source", "billing", "--name", "Billing service")
    key, note = run("create_api_key", "--source", "billing", "--scopes", "ingest,read")
    key = key.strip()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    stored = client.post("/api/v1/events", {"type": "a.b"}, format="json")
    run("revoke_api_key", key.split("_")[1])
    refused = client.post("/api/v1/events", {"type": "a.b"}, format="json")

    assert Source.objects.get().name == "Billing service"
    assert "not shown again" in note
    assert ApiKey.objects.get().scopes == ["ingest", "read"]
    assert key.split("_", 2)[2] not in ApiKey.objects.get().secret_hash
    assert stored.status_code == 201
    assert refused.status_code == 401
    assert Event.objects.count() == 1


def test_create_api_key_rejects_unknown_scopes(db):
    run("create_source", "billing")

    with pytest.raises(CommandError, match="scopes must be"):
        run("create_api_key", "--source", "billing", "--scopes", "ingest,admin")


def test_create_api_key_needs_an_existing_source(db):
    with pytest.raises(CommandError, match="create_source"):
        run("create_api_key", "--source", "nope")


@pytest.fixture
def dev_files(settings, tmp_path):
    """ensure_dev_api_key's key and password files, in this test's own directory."""
    settings.AUDITSVC_DEV_API_KEY_FILE = tmp_path / "dev-api-key"
    settings.AUDITSVC_DEV_ADMIN_PASSWORD_FILE = tmp_path / "dev-admin-password"
    return tmp_path


def test_ensure_dev_api_key_reuses_its_key(db, dev_files):

    first, _ = run("ensure_dev_api_key")
    second, _ = run("ensure_dev_api_key")

    key = (dev_files / "dev-api-key").read_text()
    assert key in first and key in second
    assert "curl" in first
    assert ApiKey.objects.count() == 1


def test_make_runs_first_start_makes_a_development_superuser_and_prints_its_login(db, dev_files):

    first, _ = run("ensure_dev_api_key")
    second, _ = run("ensure_dev_api_key")

    password = (dev_files / "dev-admin-password").read_text()
    assert len(password) >= 16
    assert f"user 'admin', password '{password}'" in first and f"password '{password}'" in second
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(password)


def test_a_superuser_of_ones_own_is_left_alone(db, dev_files):
    User.objects.create_superuser("admin", password="my own secret")

    out, _ = run("ensure_dev_api_key")

    assert "log in as your own 'admin'" in out and not (dev_files / "dev-admin-password").exists()
    assert User.objects.get(username="admin").check_password("my own secret")


def test_ensure_dev_api_key_refuses_production(db, settings):
    settings.PRODUCTION = True

    with pytest.raises(CommandError, match="for development"):
        run("ensure_dev_api_key")

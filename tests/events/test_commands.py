from __future__ import annotations

from io import StringIO

import pytest
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


def test_ensure_dev_api_key_reuses_its_key(db, tmp_path, settings):
    settings.AUDITSVC_DEV_API_KEY_FILE = tmp_path / "dev-api-key"

    first, _ = run("ensure_dev_api_key")
    second, _ = run("ensure_dev_api_key")

    key = (tmp_path / "dev-api-key").read_text()
    assert key in first and key in second
    assert "curl" in first
    assert ApiKey.objects.count() == 1

"""Schemathesis against the service's own OpenAPI schema: every operation, with an API key;
no 5xx, and no response that violates the schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from events.keys import create_api_key
from tests.factories import SourceFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_schemathesis_finds_no_server_error_and_no_schema_violation(live_server, tmp_path):
    key = create_api_key(source=SourceFactory.create(slug="fuzz"), scopes=["ingest", "read"]).plaintext
    st = Path(sys.executable).parent / "st"
    result = subprocess.run(
        [str(st), "run", f"{live_server.url}/api/schema/?format=json", "-H", f"Authorization: Bearer {key}",
         "--checks", "not_a_server_error,response_schema_conformance", "-n", "8", "--generation-deterministic",
         "--phases", "examples,coverage,fuzzing", "--request-timeout", "20"],
        capture_output=True, text=True, check=False, timeout=600, cwd=tmp_path,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout[-6000:]
    assert "Tested: 16" in result.stdout or "16/16" in result.stdout

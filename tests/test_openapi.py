"""/api/schema/ tells the truth about what the service accepts and answers (the schemathesis
run in tests/security checks it by traffic; these pin the points that once disagreed)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from events.api import openapi


@pytest.fixture
def schema(client, db):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    return json.loads(response.content)


def parameters(schema, path: str, method: str = "get") -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in schema["paths"][path][method].get("parameters", [])}


def test_stats_durations_requires_what_the_service_requires(schema):
    params = parameters(schema, "/api/v1/stats/durations")

    assert {name for name, p in params.items() if p.get("required")} == {"from_type", "to_type"}
    assert set(params) == {"from_type", "to_type", "occurred_after", "occurred_before"}


def test_pages_start_at_one(schema):
    params = parameters(schema, "/api/v1/events")

    assert params["page"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 100000}
    assert params["page_size"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert "payload.<path>" not in params  # a pattern of names, described in the text instead
    assert "application/json" in params["payload"]["content"]


@pytest.mark.parametrize("path", ["/api/v1/event-types/{name}", "/api/v1/sources/{slug}", "/api/v1/events/{id}"])
def test_a_missing_resource_is_a_documented_404(schema, path):
    assert "404" in schema["paths"][path]["get"]["responses"]


def test_the_ingest_body_is_exact(schema):
    post = schema["paths"]["/api/v1/events"]["post"]
    event = schema["components"]["schemas"]["EventInput"]

    assert post["requestBody"]["required"] is True
    assert {"409", "413", "415", "429", "503"} <= set(post["responses"])
    assert event["additionalProperties"] is False
    assert event["properties"]["payload"]["nullable"] is True  # null means {}, as the service reads it
    pattern = re.compile(event["properties"]["type"]["pattern"])
    assert pattern.fullmatch("billing.charged.v2") and not pattern.fullmatch("billing..charged")


def test_the_schema_type_pattern_is_the_services(api):
    pattern = re.compile(openapi.TYPE_NAME)
    for name in ["a", "a.b", "A-b_c.9", ".a", "a.", "a b", "é.b"]:
        accepted = api.post_json("/api/v1/events", {"type": name}).status_code == 201
        assert accepted == bool(pattern.fullmatch(name)), name


def test_a_null_payload_is_stored_as_an_empty_object(api):
    response = api.post_json("/api/v1/events", {"type": "a.b", "payload": None})

    assert response.status_code == 201
    assert response.json()["payload"] == {}

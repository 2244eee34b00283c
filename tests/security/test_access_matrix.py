"""Access control as a matrix: every endpoint by every kind of caller → the expected status."""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from events.keys import create_api_key, revoke_api_key
from events.models import Event
from tests.factories import SourceFactory

ENDPOINTS = [
    # (method, path, required scope: "ingest" | "read")
    ("POST", "/api/v1/events", "ingest"),
    ("GET", "/api/v1/events", "read"),
    ("GET", "/api/v1/events/{event_id}", "read"),
    ("GET", "/api/v1/events/{event_id}/proof", "read"),
    ("GET", "/api/v1/events/export", "read"),
    ("GET", "/api/v1/customers", "read"),
    ("GET", "/api/v1/customers/cus_1", "read"),
    ("GET", "/api/v1/customers/cus_1/events", "read"),
    ("GET", "/api/v1/event-types", "read"),
    ("GET", "/api/v1/sources", "read"),
    ("GET", "/api/v1/stats/counts", "read"),
    ("GET", "/api/v1/stats/durations?from_type=a.b&to_type=c.d", "read"),
    ("GET", "/api/v1/integrity/seals", "read"),
]
# Each caller → the statuses it gets for an ingest and for a read endpoint.
CALLERS = {
    "anonymous": (401, 401),
    "no key, bearer scheme only": (401, 401),
    "revoked key": (401, 401),
    "ingest-only key": (None, 403),  # None: the endpoint's own success status
    "read-only key": (403, None),
    "other source's key": (None, None),  # keys act for their own source; reads are global
    "staff session": (403, 403),  # signed in, but without the view permission
    "auditor session": (403, None),  # people read through the API too; they never ingest
}


@pytest.fixture
def setup(db):
    billing, shipping = SourceFactory.create(slug="billing"), SourceFactory.create(slug="shipping")
    keys = {
        "ingest-only key": create_api_key(source=billing, scopes=["ingest"]).plaintext,
        "read-only key": create_api_key(source=billing, scopes=["read"]).plaintext,
        "other source's key": create_api_key(source=shipping, scopes=["ingest", "read"]).plaintext,
        "revoked key": create_api_key(source=billing, scopes=["ingest", "read"]).plaintext,
    }
    revoke_api_key(prefix=keys["revoked key"].split("_")[1])
    writer = APIClient()
    writer.credentials(HTTP_AUTHORIZATION=f"Bearer {keys['other source' + chr(39) + 's key']}")
    event_id = writer.post("/api/v1/events", {"type": "a.b", "customer": "cus_1"}, format="json").json()["id"]
    staff = User.objects.create_user("staff", is_staff=True)
    auditor = User.objects.create_user("auditor", is_staff=True)
    auditor.groups.add(Group.objects.get(name="Auditors"))
    return keys, event_id, {"staff session": staff, "auditor session": auditor}


def client_for(caller: str, keys: dict[str, str], users: dict[str, User]) -> APIClient:
    client = APIClient()
    if caller in keys:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {keys[caller]}")
    elif caller == "no key, bearer scheme only":
        client.credentials(HTTP_AUTHORIZATION="Bearer")
    elif caller in users:
        client.force_login(users[caller])
    return client


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize(("method", "path", "scope"), ENDPOINTS)
def test_access_matrix(setup, caller, method, path, scope):
    keys, event_id, users = setup
    client = client_for(caller, keys, users)
    url = path.format(event_id=event_id)
    expected = CALLERS[caller][0 if scope == "ingest" else 1]

    response = client.post(url, {"type": "matrix.probe"}, format="json") if method == "POST" else client.get(url)

    if expected is None:
        assert response.status_code in (200, 201, 404), (caller, url, response.status_code)
        assert response.status_code != 404 or url.endswith("/proof")  # unsealed: 404 not_sealed
    else:
        assert response.status_code == expected, (caller, url, response.content)
        assert response.json()["errors"][0]["code"]
        assert not Event.objects.filter(type__name="matrix.probe").exists()


def test_a_key_is_never_logged(setup, caplog):
    keys, _, _ = setup
    secret = keys["ingest-only key"]
    client = APIClient()
    caplog.set_level(logging.DEBUG)
    for header in (f"Bearer {secret}", f"Bearer {secret}x", f"Bearer {keys['revoked key']}"):
        client.credentials(HTTP_AUTHORIZATION=header)
        client.post("/api/v1/events", {"type": "a.b"}, format="json")
        client.get("/api/v1/events")

    logged = "\n".join(record.getMessage() for record in caplog.records)
    for key in keys.values():
        assert key.split("_", 2)[2] not in logged

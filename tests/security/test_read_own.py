"""`read:own` keys: a service reads back its own source's events and nothing of anyone else's."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from events.integrity.sealing import seal_events
from events.keys import create_api_key
from tests.factories import SourceFactory


@pytest.fixture
def world(db, settings):
    settings.AUDITSVC_SEAL_LAG_SECONDS = 0
    billing, shipping = SourceFactory.create(slug="billing"), SourceFactory.create(slug="shipping")
    clients = {}
    for name, source, scopes in [("billing", billing, ["ingest", "read:own"]), ("shipping", shipping, ["ingest"]),
                                 ("auditor", shipping, ["read"])]:  # fmt: skip
        clients[name] = APIClient()
        clients[name].credentials(HTTP_AUTHORIZATION=f"Bearer {create_api_key(source=source, scopes=scopes).plaintext}")
    ids: dict[str, list[str]] = {}
    for name, customer in [("billing", "cus_1"), ("shipping", "cus_1"), ("shipping", "cus_2")]:
        body = {"type": f"{name}.done", "customer": customer}
        ids.setdefault(name, []).append(clients[name].post("/api/v1/events", body, format="json").json()["id"])
    seal_events()
    return clients, ids


def types_seen(response) -> list[str]:
    return sorted(event["type"] for event in response.json()["results"])


def test_it_lists_searches_and_exports_only_its_own_events(world):
    clients, _ = world
    own = clients["billing"]

    listed = own.get("/api/v1/events")
    by_customer = own.get("/api/v1/events?customer=cus_1")
    exported = b"".join(own.get("/api/v1/events/export").streaming_content).decode()  # type: ignore[attr-defined]
    timeline = own.get("/api/v1/customers/cus_1/events")

    assert types_seen(listed) == ["billing.done"]
    assert types_seen(by_customer) == ["billing.done"]
    assert exported.count("\n") == 1 and "billing.done" in exported
    assert types_seen(timeline) == ["billing.done"]
    assert types_seen(clients["auditor"].get("/api/v1/events")) == ["billing.done", "shipping.done", "shipping.done"]


def test_another_sources_event_does_not_exist_for_it(world):
    clients, ids = world
    own, theirs = ids["billing"][0], ids["shipping"][0]

    assert clients["billing"].get(f"/api/v1/events/{own}").status_code == 200
    assert clients["billing"].get(f"/api/v1/events/{own}/proof").status_code == 200
    for path in (f"/api/v1/events/{theirs}", f"/api/v1/events/{theirs}/proof"):
        response = clients["billing"].get(path)
        assert (response.status_code, response.json()["errors"][0]["code"]) == (404, "not_found")


def test_its_statistics_count_only_its_own_events(world):
    clients, _ = world

    counts = clients["billing"].get("/api/v1/stats/counts?interval=day&group_by=source").json()
    sources = clients["billing"].get("/api/v1/sources").json()
    durations = clients["billing"].get("/api/v1/stats/durations?from_type=billing.done&to_type=shipping.done")

    assert {(point["source"], point["count"]) for point in counts["series"]} == {("billing", 1)}
    assert [source["slug"] for source in sources] == ["billing"]
    assert clients["billing"].get("/api/v1/sources/shipping").status_code == 404
    assert durations.json()["count"] == 0  # the shipping event is not its to see
    auditor = clients["auditor"].get("/api/v1/stats/durations?from_type=billing.done&to_type=shipping.done")
    assert auditor.json()["count"] == 1


@pytest.mark.parametrize("path", ["/api/v1/customers", "/api/v1/customers/cus_1", "/api/v1/event-types"])
def test_endpoints_that_span_every_source_need_the_read_scope(world, path):
    clients, _ = world

    response = clients["billing"].get(path)

    assert response.status_code == 403
    assert response.json()["errors"][0]["message"].startswith("A 'read:own' key reads its own source's events")


def test_a_key_without_any_read_scope_still_reads_nothing(world):
    clients, _ = world
    assert clients["shipping"].get("/api/v1/events").status_code == 403

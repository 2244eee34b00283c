"""GET /api/v1/events and friends, checked against a Python oracle over the stored rows."""

from __future__ import annotations

import csv
import gzip
import io
import random
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from events.ingest.validation import parse_event
from events.ingest.write import ingest_events
from events.models import Event, Source

URL = "/api/v1/events"
T0 = datetime(2026, 9, 1, tzinfo=UTC)
TYPES = ["customer.created", "customer.deactivated", "billing.charged", "billing.failed", "billing.refund.issued"]
WORDS = ["invoice", "payment", "refund", "password", "address", "plan", "upgrade", "card"]


def ingest(source: Source, raw_events: list[dict[str, Any]]) -> None:
    ingest_events(source=source, items=[parse_event(raw) for raw in raw_events])


@pytest.fixture
def corpus(api, make_client) -> list[dict[str, Any]]:
    """~300 random events from two sources; returns the raw events with their stored ids."""
    rng = random.Random(7)
    shipping = make_client("shipping").source
    raws: list[dict[str, Any]] = []
    for n in range(300):
        raws.append(
            {
                "type": rng.choice(TYPES),
                "customer": rng.choice([None, *[f"cus_{i}" for i in range(12)]]),
                "actor": rng.choice([None, "alice", "bob", "system"]),
                # Second resolution over 40 days, with deliberate ties on occurred_at.
                "occurred_at": (T0 + timedelta(minutes=rng.randrange(0, 40 * 24 * 60, 7))).isoformat(),
                "description": " ".join(rng.sample(WORDS, 3)),
                "payload": {
                    "plan": rng.choice(["free", "pro", "team"]),
                    "invoice": {"currency": rng.choice(["EUR", "USD"]), "lines": rng.randrange(1, 4)},
                    "n": n,
                },
            }
        )
    ingest(api.source, raws[:200])
    ingest(shipping, raws[200:])
    stored = {e.payload["n"]: e for e in Event.objects.select_related("source")}
    for n, raw in enumerate(raws):
        raw["id"] = str(stored[n].id)
        raw["source"] = stored[n].source.slug
        raw["occurred"] = stored[n].occurred_at
    return raws


def walk(api, params: dict[str, Any], page_size: int = 37) -> list[str]:
    """Every id of a listing, following `next` links."""
    ids: list[str] = []
    response = api.client.get(URL, {**params, "page_size": page_size})
    for _ in range(100):
        assert response.status_code == 200, response.content
        body = response.json()
        ids += [item["id"] for item in body["results"]]
        if not body["next"]:
            return ids
        response = api.client.get(body["next"])
    raise AssertionError("pagination did not end")


def newest_first(raws: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in sorted(raws, key=lambda r: (r["occurred"], r["id"]), reverse=True)]


ORACLE_CASES = [
    ({}, lambda r: True),
    ({"type": "billing.charged"}, lambda r: r["type"] == "billing.charged"),
    ({"type": ["billing.charged", "customer.created"]}, lambda r: r["type"] in {"billing.charged", "customer.created"}),
    ({"type_prefix": "billing."}, lambda r: r["type"].startswith("billing.")),
    ({"source": "shipping"}, lambda r: r["source"] == "shipping"),
    ({"customer": "cus_3"}, lambda r: r["customer"] == "cus_3"),
    ({"actor": "alice"}, lambda r: r["actor"] == "alice"),
    ({"occurred_after": "2026-09-10T00:00:00Z"}, lambda r: r["occurred"] >= datetime(2026, 9, 10, tzinfo=UTC)),
    ({"occurred_before": "2026-09-10T00:00:00Z"}, lambda r: r["occurred"] < datetime(2026, 9, 10, tzinfo=UTC)),
    ({"q": "refund"}, lambda r: "refund" in r["description"].split()),
    ({"q": "refund card"}, lambda r: {"refund", "card"} <= set(r["description"].split())),
    ({"payload": '{"plan":"pro"}'}, lambda r: r["payload"]["plan"] == "pro"),
    ({"payload.invoice.currency": "EUR"}, lambda r: r["payload"]["invoice"]["currency"] == "EUR"),
    ({"payload.invoice.lines": "2"}, lambda r: r["payload"]["invoice"]["lines"] == 2),
    (
        {"type_prefix": "billing.", "customer": "cus_1", "payload.invoice.currency": "USD", "source": "billing"},
        lambda r: (
            r["type"].startswith("billing.")
            and r["customer"] == "cus_1"
            and r["payload"]["invoice"]["currency"] == "USD"
            and r["source"] == "billing"
        ),
    ),
    (
        {"occurred_after": "2026-09-05T00:00:00+02:00", "occurred_before": "2026-09-25T00:00:00Z", "q": "plan"},
        lambda r: (
            datetime(2026, 9, 4, 22, tzinfo=UTC) <= r["occurred"] < datetime(2026, 9, 25, tzinfo=UTC)
            and "plan" in r["description"].split()
        ),
    ),
]


@pytest.mark.parametrize(("params", "keep"), ORACLE_CASES)
def test_each_filter_matches_the_oracle(api, corpus, params, keep):
    expected = newest_first([r for r in corpus if keep(r)])

    assert walk(api, params) == expected
    assert expected or params == {}  # every case selects something


def test_received_filters_and_orderings(api, corpus):
    stored = list(Event.objects.order_by("received_at", "id").values_list("id", "received_at"))
    middle = stored[len(stored) // 2][1]

    after = walk(api, {"received_after": middle.isoformat(), "ordering": "received_at"})

    assert after == [str(i) for i, received in stored if received >= middle]
    assert walk(api, {"ordering": "-received_at"}) == [str(i) for i, _ in reversed(stored)]


def test_ordering_by_occurred_at_ascending_and_by_type(api, corpus):
    ascending = [r["id"] for r in sorted(corpus, key=lambda r: (r["occurred"], r["id"]))]
    by_type = [r["id"] for r in sorted(corpus, key=lambda r: (r["type"], r["occurred"], r["id"]))]

    assert walk(api, {"ordering": "occurred_at"}) == ascending
    assert walk(api, {"ordering": "type"}) == by_type
    assert walk(api, {"ordering": "-type"}) == list(reversed(by_type))


def test_ties_on_occurred_at_are_broken_by_id(api):
    same_time = "2026-10-01T12:00:00Z"
    ingest(api.source, [{"type": "a.b", "occurred_at": same_time, "payload": {"n": n}} for n in range(60)])
    expected = sorted((str(i) for i in Event.objects.values_list("id", flat=True)), reverse=True)

    assert walk(api, {}, page_size=7) == expected
    assert walk(api, {}, page_size=7) == expected  # and again: deterministic


def test_previous_links_walk_back_to_the_first_page(api, corpus):
    pages = []
    response = api.client.get(URL, {"page_size": 40})
    while True:
        body = response.json()
        pages.append([item["id"] for item in body["results"]])
        if not body["next"]:
            break
        response = api.client.get(body["next"])
    back = []
    while body["previous"]:
        body = api.client.get(body["previous"]).json()
        back.append([item["id"] for item in body["results"]])

    assert back == list(reversed(pages[:-1]))


def test_cursor_walk_sees_every_event_once_while_events_arrive(api, corpus):
    before = set(newest_first(corpus))
    seen: list[str] = []
    response = api.client.get(URL, {"page_size": 25})
    for page in range(100):
        body = response.json()
        seen += [item["id"] for item in body["results"]]
        # New events arrive between pages, some newer, some older than the cursor position.
        ingest(
            api.source,
            [
                {"type": "late.arrival", "payload": {"page": page}},
                {"type": "late.arrival", "occurred_at": "2026-09-20T00:00:00Z", "payload": {"page": page}},
            ],
        )
        if not body["next"]:
            break
        response = api.client.get(body["next"])

    assert len(seen) == len(set(seen))  # no duplicates
    assert before <= set(seen)  # no gaps


def test_page_number_mode_walks_with_metadata(api, corpus):
    ids: list[str] = []
    for page in range(1, 10):
        body = api.client.get(URL, {"page": page, "page_size": 40, "type_prefix": "billing."}).json()
        ids += [item["id"] for item in body["results"]]
        if page == 1:
            first_metadata = body["metadata"]
    expected = newest_first([r for r in corpus if r["type"].startswith("billing.")])

    assert ids == expected
    assert first_metadata == {
        "current_page": 1,
        "page_size": 40,
        "first_page": 1,
        "last_page": -(-len(expected) // 40),
        "total_records": len(expected),
        "total_is_estimate": False,
    }


def test_page_mode_estimates_beyond_the_count_limit(api, corpus, monkeypatch):
    monkeypatch.setattr("auditsvc.counting.COUNT_LIMIT", 100)

    metadata = api.client.get(URL, {"page": 1}).json()["metadata"]

    assert metadata["total_is_estimate"] is True
    assert metadata["total_records"] > 100


def test_event_detail(api, corpus):
    raw = corpus[5]

    body = api.client.get(f"{URL}/{raw['id']}").json()

    assert body["id"] == raw["id"]
    assert body["payload"] == raw["payload"]
    assert body["hash"] == Event.objects.get(id=raw["id"]).hash


@pytest.mark.parametrize("event_id", ["01a20bd2-3b0b-73f8-a841-e8cd838c86a7", "not-a-uuid", "' OR 1=1 --"])
def test_unknown_event_is_404(api, event_id):
    response = api.client.get(f"{URL}/{event_id}")

    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "not_found"


# --- export ------------------------------------------------------------------------------


def test_export_ndjson_returns_exactly_the_lists_events(api, corpus):
    params = {"type_prefix": "billing.", "payload.invoice.currency": "EUR"}

    response = api.client.get(f"{URL}/export", {**params, "format": "ndjson"})
    lines = b"".join(response.streaming_content).decode().splitlines()
    exported = [orjson.loads(line) for line in lines]

    assert response["Content-Type"] == "application/x-ndjson"
    assert [e["id"] for e in exported] == walk(api, params)
    listed = api.client.get(f"{URL}/{exported[0]['id']}").json()
    assert exported[0] == listed  # the same shape and values as the API


def test_export_csv_with_gzip(api, corpus):
    response = api.client.get(f"{URL}/export", {"format": "csv", "customer": "cus_2"}, HTTP_ACCEPT_ENCODING="gzip")
    text = gzip.decompress(b"".join(response.streaming_content)).decode()
    rows = list(csv.DictReader(io.StringIO(text)))

    assert response["Content-Encoding"] == "gzip"
    assert [r["id"] for r in rows] == walk(api, {"customer": "cus_2"})
    assert orjson.loads(rows[0]["payload"]) == Event.objects.get(id=rows[0]["id"]).payload
    assert list(rows[0]) == [
        "id", "type", "source", "customer", "actor", "occurred_at", "received_at",
        "description", "payload", "idempotency_key", "hash", "origin",
    ]  # fmt: skip


def test_export_rejects_an_unknown_format(api):
    response = api.client.get(f"{URL}/export", {"format": "xml"})

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "format"


# --- customers, types, sources -------------------------------------------------------------


def test_customer_detail_and_timeline(api, corpus):
    ingest(api.source, [{"type": "customer.linked", "customer": "cus_3", "customer_identities": [
        {"system": "stripe", "id": "cus_S3"}]}])  # fmt: skip
    mine = [r for r in corpus if r["customer"] == "cus_3"]

    detail = api.client.get("/api/v1/customers/cus_3").json()
    timeline = api.client.get("/api/v1/customers/cus_3/events", {"type": "billing.charged"}).json()

    assert detail["identities"] == [{"system": "stripe", "id": "cus_S3"}]
    assert detail["event_count"] == len(mine) + 1
    assert detail["first_event_at"].startswith(min(r["occurred"] for r in mine).strftime("%Y-%m-%dT%H:%M"))
    assert [e["id"] for e in timeline["results"]] == newest_first([r for r in mine if r["type"] == "billing.charged"])


def test_customer_timeline_by_identity_filter(api):
    ingest(api.source, [{"type": "a.b", "customer": "cus_9", "customer_identities": [{"system": "crm", "id": "C-9"}]}])

    assert len(walk(api, {"customer": "crm:C-9"})) == 1
    assert walk(api, {"customer": "crm:C-10"}) == []


def test_event_types_carry_counts_and_last_seen(api, django_capture_on_commit_callbacks, settings):
    settings.AUDITSVC_TYPE_COUNT_FLUSH_SECONDS = 0
    with django_capture_on_commit_callbacks(execute=True):
        ingest(api.source, [{"type": "a.b"}, {"type": "a.b"}, {"type": "c.d"}])
    with django_capture_on_commit_callbacks(execute=True):
        ingest(api.source, [{"type": "a.b"}])

    body = api.client.get("/api/v1/event-types").json()

    assert [(t["name"], t["event_count"]) for t in body] == [("a.b", 3), ("c.d", 1)]
    assert all(t["first_seen_at"] and t["last_seen_at"] for t in body)


def test_sources(api, make_client):
    make_client("shipping")

    assert [s["slug"] for s in api.client.get("/api/v1/sources").json()] == ["billing", "shipping"]


# --- stats ---------------------------------------------------------------------------------


def test_stats_counts_by_day_and_type(api, corpus):
    params = {"interval": "day", "group_by": "type", "occurred_after": "2026-09-01T00:00:00Z",
              "occurred_before": "2026-10-15T00:00:00Z", "source": "billing"}  # fmt: skip
    expected: dict[tuple[str, str], int] = {}
    for r in corpus:
        if r["source"] == "billing":
            key = (r["occurred"].strftime("%Y-%m-%d"), r["type"])
            expected[key] = expected.get(key, 0) + 1

    body = api.client.get("/api/v1/stats/counts", params).json()

    assert {(s["time"][:10], s["type"]): s["count"] for s in body["series"]} == expected


def test_stats_counts_refuse_too_many_buckets(api):
    response = api.client.get("/api/v1/stats/counts", {"interval": "hour", "occurred_after": "2020-01-01T00:00:00Z"})

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "range_too_large"


def test_stats_durations(api):
    def at(day: int, hour: int = 0) -> str:
        return datetime(2026, 10, day, hour, tzinfo=UTC).isoformat()

    ingest(api.source, [
        # cus_a: 2 days; cus_b: first created counts, next deactivation after it: 5 days;
        # cus_c: never deactivated; cus_d: 10 hours.
        {"type": "customer.created", "customer": "a", "occurred_at": at(1)},
        {"type": "customer.deactivated", "customer": "a", "occurred_at": at(3)},
        {"type": "customer.deactivated", "customer": "b", "occurred_at": at(1)},
        {"type": "customer.created", "customer": "b", "occurred_at": at(2)},
        {"type": "customer.created", "customer": "b", "occurred_at": at(4)},
        {"type": "customer.deactivated", "customer": "b", "occurred_at": at(7)},
        {"type": "customer.created", "customer": "c", "occurred_at": at(1)},
        {"type": "customer.created", "customer": "d", "occurred_at": at(1)},
        {"type": "customer.deactivated", "customer": "d", "occurred_at": at(1, 10)},
    ])  # fmt: skip

    body = api.client.get(
        "/api/v1/stats/durations", {"from_type": "customer.created", "to_type": "customer.deactivated"}
    ).json()

    day = 86400.0
    assert body["count"] == 3
    assert body["median_seconds"] == 2 * day
    assert body["max_seconds"] == 5 * day
    assert body["p90_seconds"] == pytest.approx(2 * day + 0.8 * 3 * day)


# --- bad input ------------------------------------------------------------------------------

BAD_PARAMS = [
    ({"ordering": "payload"}, "ordering", "invalid_ordering"),
    ({"occurred_after": "last tuesday"}, "occurred_after", "invalid_datetime"),
    ({"occurred_after": ""}, "occurred_after", "invalid_datetime"),
    ({"received_before": "2026-02-30T00:00:00Z"}, "received_before", "invalid_datetime"),
    ({"occurred_before": "2026-11-24T09:30:00"}, "occurred_before", "invalid_datetime"),
    ({"received_before": "2026-13-01T00:00:00Z"}, "received_before", "invalid_datetime"),
    ({"page_size": "0"}, "page_size", "invalid_page_size"),
    ({"page_size": "1001"}, "page_size", "invalid_page_size"),
    ({"page_size": "ten"}, "page_size", "invalid_page_size"),
    ({"page": "0"}, "page", "invalid_page"),
    ({"page": "1", "cursor": "x"}, "page", "invalid_pagination"),
    ({"payload": "{plan: pro}"}, "payload", "malformed_json"),
    ({"payload": "[1]"}, "payload", "wrong_type"),
    ({"payload.": "x"}, "payload.", "invalid_payload_path"),
    ({"payload.a..b": "x"}, "payload.a..b", "invalid_payload_path"),
    ({"colour": "red"}, "colour", "unknown_parameter"),
    ({"cursor": "garbage"}, "cursor", "invalid_cursor"),
    ({"cursor": "eyJvIjoiLW9jY3VycmVkX2F0In0.0000"}, "cursor", "invalid_cursor"),
    ({"actor": "a\x00b"}, "actor", "null_character"),
    ({"type": "a\x00"}, "type", "null_character"),
]


@pytest.mark.parametrize(("params", "field", "code"), BAD_PARAMS)
def test_bad_parameters_are_400_naming_the_parameter(api, params, field, code):
    response = api.client.get(URL, params)

    assert response.status_code == 400, response.content
    assert {"field": field, "code": code} in [
        {"field": e["field"], "code": e["code"]} for e in response.json()["errors"]
    ], response.json()


def test_a_cursor_replayed_with_other_filters_is_stale(api, corpus):
    next_link = api.client.get(URL, {"page_size": 10, "type": "billing.charged"}).json()["next"]
    cursor = parse_qs(urlsplit(next_link).query)["cursor"][0]

    other_filter = api.client.get(URL, {"page_size": 10, "type": "billing.failed", "cursor": cursor})
    other_order = api.client.get(URL, {"page_size": 10, "type": "billing.charged", "ordering": "occurred_at",
                                       "cursor": cursor})  # fmt: skip

    assert other_filter.json()["errors"][0]["code"] == "stale_cursor"
    assert other_order.json()["errors"][0]["code"] == "stale_cursor"


def test_a_forged_cursor_is_refused(api, corpus):
    next_link = api.client.get(URL, {"page_size": 10}).json()["next"]
    cursor = parse_qs(urlsplit(next_link).query)["cursor"][0]
    body, signature = cursor.rsplit(".", 1)

    response = api.client.get(URL, {"cursor": body[:-2] + "AA." + signature})

    assert response.json()["errors"][0]["code"] == "invalid_cursor"


@pytest.mark.parametrize(
    "value", ["' OR 1=1 --", "'; DROP TABLE events_event; --", "<script>alert(1)</script>", "%", "_", "\\"]
)
def test_sql_and_html_in_parameters_are_just_values(api, corpus, value):
    for name in ("type", "type_prefix", "source", "customer", "actor", "q", "payload.plan"):
        response = api.client.get(URL, {name: value})
        assert response.status_code == 200, (name, response.content)
        assert response.json()["results"] == [] or name == "q"
    assert Event.objects.count() == 300


# --- access ---------------------------------------------------------------------------------


def test_reads_need_the_read_scope(make_client):
    writer = make_client("writer", scopes=("ingest",))

    for path in (URL, f"{URL}/export", "/api/v1/customers", "/api/v1/event-types", "/api/v1/sources",
                 "/api/v1/stats/counts"):  # fmt: skip
        response = writer.client.get(path)
        assert response.status_code == 403, path
        assert response.json()["errors"][0]["code"] == "permission_denied"


def test_reads_need_a_key(db, client):
    assert client.get(URL).status_code == 401


def test_list_query_count_is_constant(api, corpus, django_assert_num_queries):
    # 1 resolve type names → ids, 1 page of events with type, source and customer joined.
    # (The API key is cached after the first request; last_used_at was written a moment ago.)
    api.client.get(URL)
    for page_size in (5, 200):
        with django_assert_num_queries(2):
            response = api.client.get(URL, {"type": TYPES, "page_size": page_size})
        assert len(response.json()["results"]) == min(page_size, sum(r["type"] in TYPES for r in corpus))


def test_the_schema_and_docs_are_served(db, client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    docs = client.get("/api/docs/")

    assert schema.status_code == 200
    paths = orjson.loads(schema.content)["paths"]
    assert {"/api/v1/events", "/api/v1/events/export", "/api/v1/customers/{external_id}/events",
            "/api/v1/stats/counts", "/api/v1/stats/durations"} <= set(paths)  # fmt: skip
    assert docs.status_code == 200


def test_the_docs_page_uses_local_assets(db, client):
    page = client.get("/api/docs/").content.decode()

    assert "cdn." not in page and "jsdelivr" not in page
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in page

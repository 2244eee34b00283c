"""A registration or an erasure is in force in every process from its answer on (issue 25, item 1),
and stream mode never stores a marked field plain while PostgreSQL is away (item 3, first bullet).

The live tests run two gunicorn workers with AUDITSVC_SCHEMA_CACHE_SECONDS far longer than the
test, so that only the privacy generation can tell a worker that its cache is out of date."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from events import privacy_generation
from events.erasure import erase_customer
from events.ingest import stream
from events.ingest.drain import Drainer
from events.models import Event, EventType
from events.schemas import forget_cached_checkers
from tests.events.test_schemas import put_schema, schema_key_of
from tests.processes import gunicorn
from tests.test_health import unreachable_database

pytestmark = pytest.mark.django_db(transaction=True)

TYPE = "customer.signed_up"
SCHEMA = {
    "type": "object",
    "required": ["plan"],
    "properties": {"plan": {"type": "string"}, "email": {"type": "string", "x-auditsvc": "personal"}},
}
PER_PHASE = 12  # requests sent at once, each on its own connection: both workers get some
LONG_CACHE: dict[str, str] = {"AUDITSVC_SCHEMA_CACHE_SECONDS": "600"}


def raw() -> Any:
    return stream.client()  # typed Any: see events.ingest.stream.Client


def stored_texts() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(string_agg(e::text, ' '), '') FROM events_event e")
        return str(cursor.fetchone()[0])


def request(method: str, url: str, key: str, body: object = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}", "Connection": "close"}
    call = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(call, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def at_once(calls: list[Callable[[], tuple[int, Any]]]) -> list[tuple[int, Any]]:
    """Every call in a thread of its own, started together (separate connections)."""
    answers: list[tuple[int, Any]] = [(0, None)] * len(calls)
    start = threading.Barrier(len(calls))

    def run(index: int) -> None:
        start.wait()
        answers[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


def post_all(base: str, key: str, payloads: list[dict[str, Any]]) -> list[tuple[int, Any]]:
    url = f"{base}/api/v1/events"
    bodies = [{"type": TYPE, "customer": "cus_1", "payload": payload} for payload in payloads]
    return at_once([lambda body=body: request("POST", url, key, body) for body in bodies])  # type: ignore[misc]


def register(base: str, key: str) -> None:
    status, body = request("PUT", f"{base}/api/v1/event-types/{TYPE}/schema", key,
                           {"schema": SCHEMA, "validation": "enforce"})  # fmt: skip
    assert status == 201, body


@pytest.fixture
def schemas(make_client: Any) -> Any:
    return make_client("schemas-team", scopes=("schema", "read"))


@pytest.fixture
def keys(make_client: Any, schemas: Any) -> tuple[Any, Any]:
    """(an ingest and read key, a schema key)."""
    return make_client("signup", scopes=("ingest", "read")), schemas


def test_a_schema_registered_through_one_worker_is_enforced_and_protects_in_both_at_once(keys):
    ingest, _ = keys
    with gunicorn(2, None, **LONG_CACHE) as base:
        warm = post_all(base, ingest.key, [{"plan": "pro"}] * PER_PHASE)  # every worker now knows: no schema
        assert {status for status, _ in warm} == {201}, warm

        register(base, schema_key_of(ingest).key)  # signup sent the type first: it owns it
        refused = post_all(base, ingest.key, [{"plan": n, "email": f"bad-{n}@example.com"} for n in range(PER_PHASE)])
        stored = post_all(
            base, ingest.key, [{"plan": "pro", "email": f"good-{n}@example.com"} for n in range(PER_PHASE)]
        )

    assert [status for status, _ in refused] == [400] * PER_PHASE, refused
    assert all(body["errors"][0]["code"] == "schema_violation" for _, body in refused)
    assert [status for status, _ in stored] == [201] * PER_PHASE, stored
    assert "@example.com" not in stored_texts(), "a marked e-mail was stored plain"
    assert Event.objects.filter(type__name=TYPE).count() == 2 * PER_PHASE


def test_after_an_erasure_no_worker_decrypts_the_customers_fields(keys):
    ingest, schemas = keys
    with gunicorn(2, None, **LONG_CACHE) as base:
        register(base, schemas.key)
        stored = post_all(base, ingest.key, [{"plan": "pro", "email": "ana@example.com"}] * 4)
        assert {status for status, _ in stored} == {201}, stored
        timeline = f"{base}/api/v1/customers/cus_1/events"
        before = at_once([lambda: request("GET", timeline, ingest.key)] * PER_PHASE)  # every worker holds the key
        assert all("ana@example.com" in json.dumps(body) for _, body in before), before

        erase_customer("cus_1", actor="dpo@example.com")
        after = at_once([lambda: request("GET", timeline, ingest.key)] * PER_PHASE)

    assert [status for status, _ in after] == [200] * PER_PHASE
    assert not any("ana@example.com" in json.dumps(body) for _, body in after), "decrypted after the erasure"
    assert all("[erased]" in json.dumps(body) for _, body in after)


def test_in_stream_mode_a_schema_registered_through_one_worker_holds_in_both_at_once(keys, stream_mode, settings):
    ingest, schemas = keys
    environment = {"AUDITSVC_INGEST_MODE": "stream", "AUDITSVC_STREAM_URL": stream_mode.url,
                   "AUDITSVC_STREAM_PREFIX": settings.AUDITSVC_STREAM_PREFIX, **LONG_CACHE}  # fmt: skip
    with gunicorn(2, None, **environment) as base:
        warm = post_all(base, ingest.key, [{"plan": "pro"}] * PER_PHASE)
        assert {status for status, _ in warm} == {202}, warm

        register(base, schemas.key)
        refused = post_all(base, ingest.key, [{"plan": n, "email": f"bad-{n}@example.com"} for n in range(PER_PHASE)])
        accepted = post_all(
            base, ingest.key, [{"plan": "pro", "email": f"good-{n}@example.com"} for n in range(PER_PHASE)]
        )
    report = Drainer().run(once=True)

    assert [status for status, _ in refused] == [400] * PER_PHASE, refused
    assert [status for status, _ in accepted] == [202] * PER_PHASE, accepted
    assert (report.stored, report.dead) == (2 * PER_PHASE, 0)
    assert "@example.com" not in stored_texts(), "a marked e-mail was stored plain"


def test_stream_mode_refuses_a_type_it_cannot_check_while_postgresql_is_away(api, stream_mode, schemas):
    assert put_schema(schemas, TYPE, SCHEMA, validation="enforce").status_code == 201
    assert api.post_json("/api/v1/events", {"type": "other.type"}).status_code == 202  # its key is known now
    forget_cached_checkers()  # a fresh (or recycled) worker: it knows no schema
    body = {"type": TYPE, "customer": "cus_1", "payload": {"plan": "pro", "email": "ana@example.com"}}

    with unreachable_database():
        refused = api.post_json("/api/v1/events", body)
    entries = raw().xrange(stream.stream_key(0))
    Drainer().run(once=True)

    assert refused.status_code == 503, refused.json()
    assert refused["Retry-After"]
    assert refused.json()["errors"][0]["code"] == "schema_unavailable"
    assert len(entries) == 1  # the first event's only
    assert "ana@example.com" not in stored_texts()


def test_stream_mode_still_takes_a_type_it_checked_while_postgresql_is_away(api, stream_mode, schemas):
    sensitive = {"type": "object", "properties": {"pin": {"type": "string", "x-auditsvc": "sensitive"}}}
    assert put_schema(schemas, "card.pin_set", sensitive).status_code == 201
    assert (
        api.post_json("/api/v1/events", {"type": "card.pin_set", "payload": {"pin": "pin-one-zz"}}).status_code == 202
    )

    with unreachable_database():
        accepted = api.post_json("/api/v1/events", {"type": "card.pin_set", "payload": {"pin": "pin-two-zz"}})
    report = Drainer().run(once=True)

    assert accepted.status_code == 202, accepted.json()
    assert report.stored == 2
    assert "pin-two-zz" not in stored_texts() and "pin-one-zz" not in stored_texts()  # not hex: no hash holds them


def test_a_registration_moves_the_generation_and_announces_it_to_every_shard(schemas, stream_mode, settings):
    settings.AUDITSVC_STREAM_SHARDS = 2
    before = privacy_generation.read_generation()

    assert put_schema(schemas, TYPE, SCHEMA).status_code == 201

    after = privacy_generation.read_generation()
    shards = raw()
    assert after > before
    assert [int(shards.get(stream.generation_key(n)) or 0) for n in (0, 1)] == [after, after]


@pytest.mark.usefixtures("production_write_path")
def test_a_validation_mode_changed_in_the_admin_is_in_force_at_once(api, schemas, admin_client):
    assert put_schema(schemas, TYPE, SCHEMA, validation="off").status_code == 201
    violating = {"type": TYPE, "payload": {"plan": 5}}
    assert api.post_json("/api/v1/events", violating).status_code == 201  # this process caches the "off" checker
    event_type = EventType.objects.get(name=TYPE)
    version = event_type.schemas.get()
    form = {"description": "", "validation": "enforce", "schemas-TOTAL_FORMS": "1", "schemas-INITIAL_FORMS": "1",
            "schemas-0-id": str(version.pk), "schemas-0-type": str(event_type.pk)}  # fmt: skip

    saved = admin_client.post(f"/admin/events/eventtype/{event_type.pk}/change/", form)

    assert saved.status_code == 302, saved.content.decode()[-2000:]
    refused = api.post_json("/api/v1/events", violating)
    assert refused.status_code == 400, refused.json()
    assert refused.json()["errors"][0]["code"] == "schema_violation"

"""Stream mode: accepted into a durable Redis stream (202), stored by the drainer exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import connections

from events.ingest import drain, stream
from events.ingest.drain import Drainer
from events.models import Event, EventType
from tests.paths import REPO_ROOT
from tests.processes import database_url, free_port
from tests.redis_servers import RedisServer, redis_cluster, redis_server, stream_mode_on

URL = "/api/v1/events"


def raw_client() -> Any:
    client = stream.client()
    assert isinstance(client, redis.Redis)
    return client


def test_a_single_event_is_accepted_then_stored_by_the_drainer(api, stream_mode):
    answer = api.post_json(URL, {"type": "invoice.paid", "customer": "cus_1", "payload": {"amount": 5}})

    assert answer.status_code == 202
    accepted = answer.json()
    assert accepted["status"] == "queued"
    assert accepted["lag"]["entries"] == 1
    assert Event.objects.count() == 0
    queued = api.client.get(f"{URL}/{accepted['id']}")
    assert queued.status_code == 404
    assert queued.json()["errors"][0]["code"] == "queued"

    report = Drainer().run(once=True)

    assert (report.stored, report.duplicates, report.dead) == (1, 0, 0)
    stored = api.client.get(f"{URL}/{accepted['id']}").json()
    assert stored["hash"] == accepted["hash"]  # the hash the API gave is the one the write path computes
    assert stored["received_at"] == accepted["received_at"]
    assert stored["payload"] == {"amount": 5}
    assert raw_client().xlen(stream.stream_key(0)) == 0  # trimmed once acknowledged
    assert raw_client().hlen(stream.queued_key(0)) == 0
    assert api.client.get(f"{URL}/{'0' * 8}-0000-7000-8000-{'0' * 12}").json()["errors"][0]["code"] == "not_found"


def test_a_read_own_key_is_told_queued_only_for_its_own_sources_events(make_client, stream_mode):
    billing = make_client("billing", scopes=("ingest", "read:own"))
    shipping = make_client("shipping", scopes=("ingest", "read:own"))
    reader = make_client("reporting", scopes=("read",))
    theirs = shipping.post_json(URL, {"type": "parcel.sent"}).json()["id"]
    mine = billing.post_json(URL, {"type": "invoice.paid"}).json()["id"]

    def code(client: Any, event_id: str) -> str:
        response = client.client.get(f"{URL}/{event_id}")
        assert response.status_code == 404
        return str(response.json()["errors"][0]["code"])

    assert code(billing, mine) == "queued"
    assert code(billing, theirs) == "not_found"  # as it would be once stored: not that it exists
    assert code(reader, theirs) == "queued"  # a key that reads every source is told
    Drainer().run(once=True)
    assert raw_client().hlen(stream.queued_key(0)) == 0
    assert billing.client.get(f"{URL}/{mine}").status_code == 200
    assert code(billing, theirs) == "not_found"


def test_drained_events_verify_from_their_stored_fields(api, stream_mode):
    from events.integrity.sealing import seal_events  # noqa: PLC0415
    from events.integrity.verification import verify_integrity  # noqa: PLC0415

    bodies = [
        {"type": "invoice.paid", "customer": "cus_9", "customer_identities": [{"system": "stripe", "id": "cus_S9"}],
         "actor": "ana", "description": "paid \u00e9 \t tab", "occurred_at": "2026-11-30T23:59:59.123456+05:30",
         "payload": {"amount": 19.99, "lines": [{"sku": "pro", "qty": 1}], "note": None, "big": 9007199254740991}},
        {"type": "invoice.voided", "payload": {}},
    ]  # fmt: skip
    for body in bodies:
        assert api.post_json(URL, body).status_code == 202
    Drainer().run(once=True)
    seal_events(lag_seconds=0)

    report = verify_integrity()

    assert report.events_checked == 2
    assert report.ok, report.findings  # the carried hash is the one the stored fields give


def test_a_batch_is_stored_directly_in_stream_mode(api, stream_mode):
    answer = api.post_json(URL, {"events": [{"type": "a.b"}, {"type": "a.c"}]})

    assert answer.status_code == 201
    assert Event.objects.count() == 2
    assert raw_client().xlen(stream.stream_key(0)) == 0


def test_idempotency_keys_hold_in_stream_mode(api, stream_mode):
    body = {"type": "invoice.paid", "idempotency_key": "k-1", "payload": {"n": 1}}
    first = api.post_json(URL, body)
    retry = api.post_json(URL, body)
    other = api.post_json(URL, {**body, "payload": {"n": 2}})

    assert first.status_code == 202
    assert retry.status_code == 200
    assert retry.json()["id"] == first.json()["id"]
    assert other.status_code == 409
    assert other.json()["errors"][0] == {
        "field": "idempotency_key",
        "code": "idempotency_key_reused",
        "message": "This idempotency key is held by another event (for the dedupe window; for good if imported).",
    }
    assert Drainer().run(once=True).stored == 1
    after = api.post_json(URL, body)
    assert after.status_code == 200
    assert after.json()["id"] == first.json()["id"]
    assert Drainer().run(once=True).stored == 0
    assert Event.objects.filter(idempotency_key="k-1").count() == 1


def test_an_entry_stored_but_not_acknowledged_is_not_stored_twice(api, stream_mode, settings, monkeypatch):
    accepted = api.post_json(URL, {"type": "invoice.paid", "idempotency_key": "k-2"}).json()
    crashing = Drainer(consumer="crashes-after-commit")

    def crash(*args: Any) -> None:
        raise SystemExit("killed between commit and acknowledgement")

    monkeypatch.setattr(crashing, "_finish", crash)
    with pytest.raises(SystemExit):
        crashing.drain_shard(0)  # the new entry: stored and committed, never acknowledged
    assert Event.objects.filter(id=accepted["id"]).count() == 1

    settings.AUDITSVC_STREAM_CLAIM_IDLE_SECONDS = 0
    report = Drainer(consumer="survivor").run(once=True)

    assert (report.stored, report.duplicates) == (0, 1)
    assert Event.objects.filter(id=accepted["id"]).count() == 1
    assert raw_client().xpending(stream.stream_key(0), stream.GROUP)["pending"] == 0


def test_a_first_delivery_of_an_event_stored_before_is_still_stored_once(api, stream_mode):
    # Not possible with appendfsync always (a delivery is on disk before a drainer acts on it),
    # but with relaxed durability a Redis crash can forget one: the lookup by id catches it.
    from events.ingest.validation import parse_event  # noqa: PLC0415

    accepted = api.post_json(URL, {"type": "invoice.paid", "payload": {"n": 1}}).json()
    (_, fields), *_ = raw_client().xrange(stream.stream_key(0))
    assert Drainer().run(once=True).stored == 1
    raw_client().xadd(stream.stream_key(0), fields)  # as if the delivery were forgotten
    others = [str(stream.accept_event(source=api.source, item=parse_event({"type": "x.y"})).event_id) for _ in range(3)]

    report = Drainer().run(once=True)

    assert (report.stored, report.duplicates, report.dead) == (3, 1, 0)
    assert Event.objects.filter(id=accepted["id"]).count() == 1
    assert Event.objects.filter(id__in=others).count() == 3


def test_entries_of_a_drainer_that_died_are_claimed_after_the_idle_time(api, stream_mode, settings):
    settings.AUDITSVC_STREAM_CLAIM_IDLE_SECONDS = 1
    accepted = api.post_json(URL, {"type": "invoice.paid"}).json()
    raw_client().xreadgroup(stream.GROUP, "died", {stream.stream_key(0): ">"}, count=10)  # read, then gone

    assert Drainer(consumer="early").run(once=True).stored == 0  # not idle long enough yet
    time.sleep(1.1)
    report = Drainer(consumer="late").run(once=True)

    assert report.stored == 1
    assert Event.objects.filter(id=accepted["id"]).exists()


def test_a_refused_entry_goes_to_the_dead_letter_stream_and_the_rest_are_stored(api, stream_mode, settings):
    settings.AUDITSVC_STRICT_EVENT_TYPES = True
    EventType.objects.create(name="known.type")
    good = api.post_json(URL, {"type": "known.type"}).json()
    refused = api.post_json(URL, {"type": "never.registered"}).json()
    raw_client().xadd(stream.stream_key(0), {"e": "{not json", "m": stream.entry_mac("{not json")})

    report = Drainer().run(once=True)

    assert (report.stored, report.dead) == (1, 2)
    assert Event.objects.filter(id=good["id"]).exists()
    assert not Event.objects.filter(id=refused["id"]).exists()
    letters = {fields["e"]: fields["reason"] for _, fields in raw_client().xrange(stream.dead_key(0))}
    (refusal,) = [reason for entry, reason in letters.items() if refused["id"] in entry]
    assert refusal.startswith('{"status":400,"errors":[{"field":"type","code":"unknown_event_type"')
    assert letters["{not json"].startswith("undecodable")
    assert raw_client().xlen(stream.stream_key(0)) == 0
    assert raw_client().hlen(stream.queued_key(0)) == 0


def test_an_entry_that_keeps_failing_is_dead_lettered_after_max_deliveries(api, stream_mode, settings, monkeypatch):
    settings.AUDITSVC_STREAM_MAX_DELIVERIES = 2
    poison = api.post_json(URL, {"type": "poison.pill"}).json()
    fine = api.post_json(URL, {"type": "fine.event"}).json()
    real_ingest_each = drain.ingest_each  # type: ignore[attr-defined]

    def failing_on_poison(*, source: Any, items: Any, **options: Any) -> Any:
        if any(item.type == "poison.pill" for item in items):
            raise RuntimeError("a bug this entry triggers")
        return real_ingest_each(source=source, items=items, **options)

    monkeypatch.setattr(drain, "ingest_each", failing_on_poison)
    first = Drainer(consumer="one").run(once=True)  # the batch fails, then each alone: fine stored
    assert (first.stored, first.dead) == (1, 0)
    settings.AUDITSVC_STREAM_CLAIM_IDLE_SECONDS = 0  # the poison entry is claimed again at once
    second = Drainer(consumer="two").run(once=True)  # delivered a second time: dead-lettered

    assert (second.stored, second.dead) == (0, 1)
    assert Event.objects.filter(id=fine["id"]).exists()
    (_, letter), *_ = raw_client().xrange(stream.dead_key(0))
    assert letter["reason"] == "failed 2 times: RuntimeError: a bug this entry triggers"
    assert poison["id"] in letter["e"]
    assert letter["deliveries"] == "2"


def test_the_stream_is_trimmed_only_below_what_every_group_acknowledged(api, stream_mode):
    key = stream.stream_key(0)
    raw_client().xgroup_create(key, "forwarder", id="0")
    for n in range(3):
        api.post_json(URL, {"type": "invoice.paid", "payload": {"n": n}})

    assert Drainer().run(once=True).stored == 3
    assert raw_client().xlen(key) == 3  # the forwarder has read none of them
    read = raw_client().xreadgroup("forwarder", "f1", {key: ">"}, count=2)
    raw_client().xack(key, "forwarder", *[entry_id for entry_id, _ in read[0][1]])
    drain.trim_acknowledged(0)
    assert raw_client().xlen(key) == 1


def test_accepted_events_survive_kill_9_of_redis(api, settings, tmp_path):
    with redis_server(tmp_path) as server, stream_mode_on(settings, server.url):
        ids = [api.post_json(URL, {"type": "invoice.paid", "payload": {"n": n}}).json()["id"] for n in range(50)]
        server.kill()
        down = api.post_json(URL, {"type": "invoice.paid"})
        server.start()  # on the same directory: it replays its AOF; the client reconnects by itself
        report = Drainer().run(once=True)

    assert down.status_code == 503
    assert down.json()["errors"][0]["code"] == "stream_unavailable"
    assert down["Retry-After"]
    assert report.stored == 50
    assert Event.objects.filter(id__in=ids).count() == 50


@pytest.mark.django_db(transaction=True)
def test_one_redis_for_stream_and_cache_killed_is_the_stream_unavailable_and_only_single_events_wait(
    api, settings, tmp_path
):
    # AUDITSVC_STREAM_URL defaults to REDIS_URL: one Redis, killed, is the stream and the cache.
    with redis_server(tmp_path) as server, stream_mode_on(settings, server.url):
        settings.CACHES = {
            "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": server.url}
        }
        server.kill()
        single = api.post_json(URL, {"type": "invoice.paid"})
        batch = api.post_json(URL, {"events": [{"type": "invoice.paid"}] * 2})  # stored directly
        listed = api.client.get(URL)
        unknown = api.client.get(f"{URL}/{'0' * 8}-0000-7000-8000-{'0' * 12}")  # queued? Redis would say

    assert single.status_code == 503
    assert single.json()["errors"][0]["code"] == "stream_unavailable"
    assert batch.status_code == 201
    assert listed.status_code == 200
    assert len(listed.json()["results"]) == 2
    assert unknown.status_code == 503
    assert unknown.json()["errors"][0]["code"] == "stream_unavailable"


def test_durability_is_checked_and_relaxed_only_when_asked(settings, tmp_path, client, db):
    with (
        redis_server(tmp_path, "--appendonly", "yes", "--appendfsync", "everysec") as server,
        stream_mode_on(settings, server.url),
    ):
        strict = stream.durability_problem()
        settings.AUDITSVC_STREAM_DURABILITY = "relaxed"
        relaxed = stream.durability_problem()
        ready = client.get("/readyz").json()

    assert strict is not None
    assert "appendfsync=everysec" in strict
    assert "AUDITSVC_STREAM_DURABILITY=relaxed" in strict
    assert relaxed is None
    assert ready["durability"] == "relaxed"
    assert ready["loss_window"] == "about 1 s of accepted events on a Redis crash or power loss (appendfsync everysec)"


def test_readyz_shows_the_lag_in_stream_mode(api, stream_mode, client):
    api.post_json(URL, {"type": "invoice.paid"})
    time.sleep(0.05)
    ready = client.get("/readyz")

    assert ready.status_code == 200
    body = ready.json()
    assert (body["mode"], body["stream"], body["durability"], body["database"]) == ("stream", "ok", "strict", "ok")
    assert body["lag"]["entries"] == 1
    assert body["lag"]["oldest_seconds"] >= 0.05
    Drainer().run(once=True)
    assert client.get("/readyz").json()["lag"] == {"entries": 0, "oldest_seconds": 0.0}


def test_readyz_is_503_when_the_streams_redis_is_gone(settings, tmp_path, client, db):
    with redis_server(tmp_path) as server, stream_mode_on(settings, server.url):
        up = client.get("/readyz")
        server.kill()
        down = client.get("/readyz")

    assert up.status_code == 200
    assert down.status_code == 503
    assert down.json() == {"status": "unavailable", "stream": "unreachable"}
    assert down["Retry-After"] == "5"


@pytest.mark.django_db(transaction=True)  # drainers in threads commit for real
def test_a_sharded_stream_on_a_three_master_cluster_with_one_drainer_per_shard(make_client, settings, tmp_path):
    with redis_cluster(tmp_path) as nodes, stream_mode_on(settings, nodes[0].url, cluster=True, shards=3):
        assert stream.durability_problem() is None  # every primary is checked
        api = make_client()
        accepted = [
            api.post_json(URL, {"type": "invoice.paid", "idempotency_key": f"c-{n}"}).json()["id"] for n in range(60)
        ]
        retried = api.post_json(URL, {"type": "invoice.paid", "idempotency_key": "c-7"}).json()["id"]
        per_shard = [state.entries for state in stream.shard_states()]
        holders = {_node_of(nodes, stream.stream_key(shard)) for shard in range(3)}
        reports = _drain_in_threads([[0], [1], [2]])

    assert retried == accepted[7]
    assert sum(per_shard) == 60
    assert all(count > 0 for count in per_shard)
    assert len(holders) > 1  # the shards really live on different primaries
    assert [report.stored for report in reports] == per_shard
    assert Event.objects.filter(id__in=accepted).count() == 60


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)


def _node_of(nodes: list[RedisServer], key: str) -> int:
    for server in nodes:
        node = redis.Redis(port=server.port)
        if node.cluster("countkeysinslot", node.cluster("keyslot", key)):
            return server.port
    raise AssertionError(f"{key} is on no node")


def _drain_in_threads(shard_sets: list[list[int]]) -> list[drain.DrainReport]:
    reports: list[drain.DrainReport] = [drain.DrainReport() for _ in shard_sets]

    def run(index: int) -> None:
        try:
            reports[index] = Drainer(shard_sets[index], consumer=f"drainer-{index}", batch=100).run(once=True)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(shard_sets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return reports


def test_gunicorn_refuses_stream_mode_on_a_redis_that_could_lose_acknowledged_events(tmp_path, db):
    with redis_server(tmp_path, "--appendonly", "no") as server:
        env = {**os.environ, "DATABASE_URL": database_url(), "AUDITSVC_INGEST_MODE": "stream",
               "AUDITSVC_STREAM_URL": server.url, "AUDITSVC_VAR_DIR": str(tmp_path / "var")}  # fmt: skip
        command = [str(Path(sys.executable).parent / "gunicorn"), "auditsvc.wsgi", "-c", "gunicorn.conf.py",
                   "-b", f"127.0.0.1:{free_port()}"]  # fmt: skip
        refused = run(command, env)
        drainer = run([sys.executable, "manage.py", "drain_events", "--once"], env)

    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr  # refused by the master, before any worker boots
    assert "could lose every event accepted since the last RDB snapshot (AOF is off on a node)" in refused.stderr
    assert drainer.returncode != 0
    assert "appendonly=no" in drainer.stderr


@pytest.mark.django_db(transaction=True)  # the command is another process: the rows must be committed
def test_drain_events_once_as_a_process(make_client, stream_mode, settings):
    api = make_client()
    ids = [api.post_json(URL, {"type": "invoice.paid", "payload": {"n": n}}).json()["id"] for n in range(25)]
    env = {**os.environ, "DATABASE_URL": database_url(), "AUDITSVC_INGEST_MODE": "stream",
           "AUDITSVC_STREAM_URL": stream_mode.url,
           "AUDITSVC_STREAM_PREFIX": settings.AUDITSVC_STREAM_PREFIX}  # fmt: skip

    done = run([sys.executable, "manage.py", "drain_events", "--once", "--batch", "10"], env)

    assert done.returncode == 0, done.stderr
    assert "Stored 25 events, 0 already stored, 0 dead-lettered." in done.stdout
    assert Event.objects.filter(id__in=ids).count() == 25


def test_the_admin_shows_the_lag_and_requeues_a_dead_letter(api, stream_mode, settings, admin_client):
    settings.AUDITSVC_STRICT_EVENT_TYPES = True
    refused = api.post_json(URL, {"type": "not.yet.registered"}).json()
    Drainer().run(once=True)
    api.post_json(URL, {"type": "still.waiting"})  # undrained

    changelist = admin_client.get("/admin/events/event/").content.decode()
    page = admin_client.get("/admin/events/event/stream/").content.decode()
    (letter_id, _), *_ = raw_client().xrange(stream.dead_key(0))
    EventType.objects.create(name="not.yet.registered")  # the cause, fixed
    settings.AUDITSVC_STRICT_EVENT_TYPES = False
    requeued = admin_client.post("/admin/events/event/stream/", {"shard": "0", "letter": letter_id})
    report = Drainer().run(once=True)

    assert "Ingest stream: 1 event waiting" in changelist and "1 dead letter." in changelist
    assert refused["id"] in page and "unknown_event_type" in page and "Requeue" in page
    assert requeued.status_code == 302
    assert raw_client().xlen(stream.dead_key(0)) == 0
    assert report.stored == 2
    assert Event.objects.filter(id=refused["id"]).exists()


def test_staff_without_superuser_see_the_stream_but_cannot_requeue(stream_mode, client, django_user_model):
    from django.contrib.auth.models import Permission  # noqa: PLC0415

    staff = django_user_model.objects.create_user("support", password="pw-support-1", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_event"))
    client.force_login(staff)

    page = client.get("/admin/events/event/stream/")
    post = client.post("/admin/events/event/stream/", {"shard": "0", "letter": "1-0"})

    assert page.status_code == 200
    assert "Requeue" not in page.content.decode()
    assert post.status_code == 403


@pytest.mark.django_db(transaction=True)  # drainers in threads commit for real
def test_several_drainers_share_one_shard_and_store_each_event_once(make_client, stream_mode):
    api = make_client()
    source = api.source
    from events.ingest.validation import parse_event  # noqa: PLC0415

    ids = [str(stream.accept_event(source=source, item=parse_event({"type": "a.b", "payload": {"n": n}})).event_id)
           for n in range(3000)]  # fmt: skip

    reports = _drain_in_threads([[0], [0], [0]])

    assert sum(report.stored for report in reports) == 3000
    assert sum(1 for report in reports if report.stored) > 1  # the work was shared
    assert Event.objects.filter(id__in=ids).count() == 3000
    assert raw_client().xlen(stream.stream_key(0)) == 0

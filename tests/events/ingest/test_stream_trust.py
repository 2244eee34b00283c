"""Stream mode's loose ends (issue 24, item 5): the drainer stores only entries the API wrote
(a MAC under the service's key), Redis ACL users work, and accepted entries never wait where no
drainer looks (fewer shards, or direct mode again)."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from django.core.management import CommandError, call_command

from bench.redis_server import DURABLE
from events.ingest import stream
from events.ingest.drain import BAD_MAC, Drainer
from events.ingest.validation import parse_event
from events.models import Event
from tests.processes import gunicorn
from tests.redis_servers import RedisServer, stream_mode_on
from tests.test_metrics import metrics

URL = "/api/v1/events"


def raw() -> Any:
    return stream.client()


def test_an_entry_not_written_by_the_api_is_dead_lettered_and_counted(api, stream_mode):
    genuine = api.post_json(URL, {"type": "invoice.paid", "actor": "alice"}).json()
    (_, fields), *_ = raw().xrange(stream.stream_key(0))
    forged = orjson.loads(fields["e"])
    forged.update(id=str(uuid.uuid4()), actor="mallory", received_at="2020-01-01T00:00:00+00:00")
    text = orjson.dumps(forged).decode()
    other_key = hmac.new(b"not the service's key", text.encode(), hashlib.sha256).hexdigest()
    raw().xadd(stream.stream_key(0), {"e": text})  # no MAC
    raw().xadd(stream.stream_key(0), {"e": text, "m": fields["m"]})  # the MAC of another entry
    raw().xadd(stream.stream_key(0), {"e": text, "m": other_key})  # a MAC under another key

    report = Drainer().run(once=True)

    assert (report.stored, report.dead) == (1, 3)
    assert list(Event.objects.values_list("actor", flat=True)) == ["alice"]
    assert Event.objects.get().id == uuid.UUID(genuine["id"])
    letters = raw().xrange(stream.dead_key(0))
    assert [letter["reason"] for _, letter in letters] == [BAD_MAC] * 3
    assert stream.shard_states()[0].forged == 3
    assert metrics()[("auditsvc_stream_forged_entries_total", ())] == 3

    # Requeued, a forged letter is still forged: it comes back as a dead letter, never stored.
    assert stream.requeue_dead_letter(0, letters[0][0])
    assert Drainer().run(once=True).dead == 1
    assert Event.objects.count() == 1 and stream.shard_states()[0].forged == 4


def test_a_requeued_genuine_letter_keeps_its_mac_and_is_stored(api, stream_mode, settings):
    settings.AUDITSVC_STRICT_EVENT_TYPES = True
    refused = api.post_json(URL, {"type": "later.registered"}).json()
    assert Drainer().run(once=True).dead == 1
    settings.AUDITSVC_STRICT_EVENT_TYPES = False
    ((letter_id, letter),) = raw().xrange(stream.dead_key(0))
    assert letter["m"] == stream.entry_mac(letter["e"])

    assert stream.requeue_dead_letter(0, letter_id)
    assert Drainer().run(once=True).stored == 1
    assert Event.objects.filter(id=refused["id"]).exists()


def test_a_redis_with_an_acl_user_serves_stream_mode(api, settings, tmp_path: Path):
    acl = ("--user", "default", "off", "--user", "auditsvc", "on", ">s3cret", "~*", "&*", "+@all")
    server = RedisServer(tmp_path, (*DURABLE, *acl), username="auditsvc", password="s3cret")
    server.start()
    try:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port).xadd("auditsvc:{s0}:events", {"e": "{}"})  # no one without the password
        with stream_mode_on(settings, server.url):
            assert stream.durability_problem() is None
            accepted = api.post_json(URL, {"type": "invoice.paid"})
            assert accepted.status_code == 202, accepted.json()
            assert Drainer().run(once=True).stored == 1
        assert Event.objects.filter(id=accepted.json()["id"]).exists()
    finally:
        server.kill()


def accept_into(shard: int, source: Any, count: int) -> list[str]:
    """Accept events until count of them landed in shard (ids spread them over the shards)."""
    ids: list[str] = []
    while len(ids) < count:
        before = raw().xlen(stream.stream_key(shard))
        accepted = stream.accept_event(source=source, item=parse_event({"type": "x.y"}))
        if raw().xlen(stream.stream_key(shard)) > before:
            ids.append(str(accepted.event_id))
    return ids


def test_entries_of_a_shard_no_longer_served_stop_the_start_and_drain_events_stores_them(api, stream_mode, settings):
    settings.AUDITSVC_STREAM_SHARDS = 3
    stream.ensure_groups()
    stranded = accept_into(2, api.source, 2)
    settings.AUDITSVC_STREAM_SHARDS = 2  # lowered: nothing reads shard 2 any more

    assert stream.stranded_streams() == {2: 2}
    problem = stream.stranded_problem() or ""
    assert f"{stream.stream_key(2)} (2 entries)" in problem and "AUDITSVC_STREAM_SHARDS=2" in problem
    environment = {"AUDITSVC_INGEST_MODE": "stream", "AUDITSVC_STREAM_URL": stream_mode.url,
                   "AUDITSVC_STREAM_SHARDS": "2", "AUDITSVC_STREAM_PREFIX": settings.AUDITSVC_STREAM_PREFIX,
                   "AUDITSVC_STREAM_DURABILITY": "strict"}  # fmt: skip
    log = Path(stream_mode.directory) / "gunicorn.log"
    refused = refused_start(environment, log)
    assert stream.stream_key(2) in refused, refused

    call_command("drain_events", "--once")

    assert Event.objects.filter(id__in=stranded).count() == 2
    assert stream.stranded_streams() == {} and stream.stranded_problem() is None
    with gunicorn(**environment):
        pass  # starts now
    log.unlink()


def test_after_a_switch_back_to_direct_mode_the_stream_is_named_and_can_be_drained(api, stream_mode, settings):
    waiting = accept_into(0, api.source, 3)
    settings.AUDITSVC_INGEST_MODE = "direct"

    assert stream.stranded_streams() == {0: 3}
    assert "direct mode" in (stream.stranded_problem() or "")
    call_command("drain_events", "--once")

    assert Event.objects.filter(id__in=waiting).count() == 3
    assert stream.stranded_problem() is None
    with pytest.raises(CommandError, match="nothing to drain"):
        call_command("drain_events", "--once")


def refused_start(environment: dict[str, str], log: Path) -> str:
    """gunicorn's refusal to start under environment: what it said."""
    with (
        log.open("wb") as stderr,
        pytest.raises(RuntimeError, match="did not come up"),
        gunicorn(1, stderr, **environment),
    ):
        pass
    return log.read_text()


def test_direct_mode_starts_when_the_stream_redis_is_away(settings, transactional_db):
    settings.AUDITSVC_INGEST_MODE = "direct"
    settings.AUDITSVC_STREAM_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    stream.forget_client()
    try:
        assert stream.stranded_problem() is None
    finally:
        stream.forget_client()

"""Grouped appends: concurrent accepts of a worker share one pipelined round trip to Redis, and
each caller is answered with its own entry's reply, only once it arrived.

Against a real redis-server. A group is held in flight with CLIENT PAUSE WRITE (Redis then
leaves the pipeline's EVALSHAs unrun until CLIENT UNPAUSE, or until it is killed): the callers
that arrive meanwhile queue up for the next pipeline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis
from django.db import connections

from auditsvc.errors import Conflict, Unavailable
from events.ingest import stream
from events.ingest.drain import Drainer
from events.ingest.grouped_append import StreamAppender
from events.ingest.validation import parse_event
from events.models import Event, Source
from tests.redis_servers import redis_server, stream_mode_on


def appender() -> StreamAppender:
    grouped = stream._grouped_appender()
    assert grouped is not None, "grouped appends are off"
    return grouped


def accept_in_threads(source: Source, bodies: list[dict[str, Any]], threads: int) -> tuple[list[Any], list[Any]]:
    """(the threads, each body's outcome: Accepted or the exception) once the threads are started;
    they start their accepts together and spread the bodies between them."""
    outcomes: list[Any] = [None] * len(bodies)
    barrier = threading.Barrier(threads)

    def run(first: int) -> None:
        try:
            barrier.wait()
            for n in range(first, len(bodies), threads):
                try:
                    outcomes[n] = stream.accept_event(source=source, item=parse_event(bodies[n]))
                except Exception as exc:
                    outcomes[n] = exc
        finally:
            connections.close_all()

    started = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for thread in started:
        thread.start()
    return started, outcomes


def joined(threads: list[Any], outcomes: list[Any]) -> list[Any]:
    for thread in threads:
        thread.join(90)
        assert not thread.is_alive(), "a caller was stranded"
    return outcomes


def until(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def stream_ids(client: Any) -> list[str]:
    return [orjson.loads(fields["e"])["id"] for _, fields in client.xrange(stream.stream_key(0))]


def info(port: int, section: str, field: str) -> int:
    found: Any = redis.Redis(port=port).info(section)  # typed Any: see events.ingest.stream.Client
    return int(found[field])


def connections_received(port: int) -> int:
    return info(port, "stats", "total_connections_received")


@pytest.mark.django_db(transaction=True)  # the accepting threads read with connections of their own
def test_it_shares_pipelines_between_concurrent_accepts_and_stores_each_once(make_client, stream_mode):
    source = make_client().source
    bodies = [{"type": "a.b", "payload": {"n": n}} for n in range(160)]
    sent, opened = appender().pipelines, connections_received(stream_mode.port)

    outcomes = joined(*accept_in_threads(source, bodies, threads=16))

    pipelines = appender().pipelines - sent
    assert all(isinstance(outcome, stream.Accepted) and outcome.created for outcome in outcomes), outcomes
    ids = [str(outcome.event_id) for outcome in outcomes]
    assert 0 < pipelines < len(bodies) // 2, pipelines  # measured on this machine: about 20 for 160
    # Redis's own measure: one round trip at a time uses one connection, where 16 threads each
    # sending their own would have the pool open one for each of them in flight.
    assert connections_received(stream_mode.port) - opened <= 2
    assert sorted(stream_ids(stream.client())) == sorted(ids)  # each appended once
    assert Drainer().run(once=True).stored == len(bodies)
    assert Event.objects.filter(id__in=ids).count() == len(set(ids)) == len(bodies)


@pytest.mark.django_db(transaction=True)
def test_it_fails_every_caller_of_a_group_in_flight_when_redis_is_killed(make_client, settings, tmp_path, monkeypatch):
    source = make_client().source
    callers = 8
    lead = StreamAppender._lead

    def lead_once_all_have_come(self: StreamAppender) -> None:  # so that the group in flight holds them all
        until(lambda: self.queued() == callers)
        lead(self)

    with redis_server(tmp_path) as server, stream_mode_on(settings, server.url):
        before = [stream.accept_event(source=source, item=parse_event({"type": "a.b"})) for _ in range(5)]
        sent = appender().pipelines
        probe = redis.Redis(port=server.port)
        probe.execute_command("CLIENT", "PAUSE", 30000, "WRITE")
        monkeypatch.setattr(StreamAppender, "_lead", lead_once_all_have_come)
        threads, outcomes = accept_in_threads(source, [{"type": "a.b", "payload": {"n": n}} for n in range(callers)],
                                              callers)  # fmt: skip
        until(lambda: info(server.port, "clients", "blocked_clients") == 1)  # the pipeline waits in Redis
        server.kill()
        joined(threads, outcomes)
        in_flight = appender().pipelines - sent
        monkeypatch.undo()
        server.start()  # on its AOF
        kept = stream_ids(stream.client())
        after = stream.accept_event(source=source, item=parse_event({"type": "a.b"}))  # the script is loaded again
        stored = Drainer().run(once=True).stored

    assert in_flight == 1  # all of them in one pipeline
    assert all(isinstance(outcome, Unavailable) and outcome.code == "stream_unavailable" for outcome in outcomes)
    assert kept == [str(accepted.event_id) for accepted in before]  # acknowledged: kept; refused: not appended
    assert after.created
    assert stored == 6


@pytest.mark.django_db(transaction=True)
def test_an_idempotency_conflict_in_a_group_is_only_its_own_callers(make_client, stream_mode):
    source = make_client().source
    held = {"type": "a.b", "idempotency_key": "k-held", "payload": {"n": 0}}
    first = stream.accept_event(source=source, item=parse_event(held))
    group = [{**held, "payload": {"n": 1}}, held, *({"type": "a.b", "payload": {"n": n}} for n in range(5))]

    outcomes = in_one_pipeline(source, group, stream_mode.port)

    conflict, repeat, *fresh = outcomes
    assert isinstance(conflict, Conflict)
    assert conflict.errors[0].code == "idempotency_key_reused"
    assert isinstance(repeat, stream.Accepted)
    assert (repeat.event_id, repeat.created) == (first.event_id, False)
    assert all(isinstance(outcome, stream.Accepted) and outcome.created for outcome in fresh), fresh
    assert Drainer().run(once=True).stored == 1 + 1 + len(fresh)  # the first, the leader's, the fresh


@pytest.mark.django_db(transaction=True)
def test_a_script_error_in_a_group_is_only_its_own_callers(make_client, stream_mode):
    source = make_client().source
    broken = "k-broken"
    # The key's place holds a hash: the script's GET of it fails (WRONGTYPE) for that entry alone.
    stream.client().hset(stream._idempotency_key(0, source, broken), "x", "1")
    group: list[dict[str, Any]] = [{"type": "a.b", "idempotency_key": broken}]
    group += [{"type": "a.b", "payload": {"n": n}} for n in range(5)]

    failed, *fresh = in_one_pipeline(source, group, stream_mode.port)

    assert isinstance(failed, Unavailable)
    assert failed.code == "stream_unavailable"
    assert all(isinstance(outcome, stream.Accepted) and outcome.created for outcome in fresh), fresh
    appended = stream_ids(stream.client())
    assert len(appended) == 1 + len(fresh)  # the leader's and the fresh ones
    assert {str(outcome.event_id) for outcome in fresh} <= set(appended)


def in_one_pipeline(source: Source, bodies: list[dict[str, Any]], port: int) -> list[Any]:
    """The outcomes of bodies, accepted together in one pipeline: the one behind a leader's held
    in flight (CLIENT PAUSE WRITE) until all of them have queued up."""
    sent = appender().pipelines
    pauser = redis.Redis(port=port)
    pauser.execute_command("CLIENT", "PAUSE", 30000, "WRITE")
    try:
        leader = accept_in_threads(source, [{"type": "a.b"}], 1)
        until(lambda: appender().pipelines == sent + 1)
        behind = accept_in_threads(source, bodies, len(bodies))
        until(lambda: appender().queued() == len(bodies))
    finally:
        pauser.execute_command("CLIENT", "UNPAUSE")
    assert isinstance(joined(*leader)[0], stream.Accepted)
    outcomes = joined(*behind)
    assert appender().pipelines == sent + 2  # the leader's, then one for all of them
    return outcomes


def test_a_caller_behind_a_stuck_round_trip_gives_up_in_time_and_is_never_sent(stream_mode):
    script = stream.client().register_script("redis.call('RPUSH', KEYS[1], ARGV[1]); return ARGV[1]")
    grouped = StreamAppender(client=stream.client(), script=script, max_group=64, wait_seconds=0.3)
    key = f"{stream.stream_key(0)}-grouping-test"
    outcomes: dict[str, Any] = {}

    def call(value: str) -> None:
        try:
            outcomes[value] = grouped.call(keys=[key], args=[value])
        except Exception as exc:
            outcomes[value] = exc

    pauser = redis.Redis(port=stream_mode.port)
    pauser.execute_command("CLIENT", "PAUSE", 30000, "WRITE")
    try:
        stuck = threading.Thread(target=call, args=("first",))
        stuck.start()
        until(lambda: grouped.pipelines == 1)
        call("second")  # behind the stuck one: gives up after wait_seconds
        assert grouped.queued() == 0  # withdrawn
    finally:
        pauser.execute_command("CLIENT", "UNPAUSE")
    stuck.join(30)

    assert isinstance(outcomes["second"], TimeoutError)
    assert "not sent" in str(outcomes["second"])
    assert outcomes["first"] == "first"
    assert stream.client().lrange(key, 0, -1) == ["first"]  # the one that gave up was never appended
    assert grouped.call(keys=[key], args=["third"]) == "third"  # and the lead lapsed: the next one leads
    stream.client().delete(key)

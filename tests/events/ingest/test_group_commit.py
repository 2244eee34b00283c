"""Group commit: concurrent single-event POSTs of a worker share one transaction, each is
answered only after its commit, and one refused event never fails the others."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection, connections
from rest_framework.test import APIClient

from events.ingest import group_commit
from events.ingest.group_commit import stop_group_commit
from events.models import Event

pytestmark = pytest.mark.django_db(transaction=True)  # the committer thread commits for real

URL = "/api/v1/events"


@contextmanager
def commits_held() -> Iterator[None]:
    """Hold every commit of new events behind a lock of another session, so that the events
    sent meanwhile gather into one group; release on exit."""
    other = connections.create_connection("default")
    other.set_autocommit(False)
    with other.cursor() as cursor:
        cursor.execute("LOCK TABLE events_eventtype IN EXCLUSIVE MODE")  # new types wait for it
    try:
        yield
    finally:
        other.rollback()
        other.close()


@pytest.fixture
def arrivals(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per request that has reached the group committer (and waits for its group)."""
    arrived: list[int] = []
    store = group_commit.GroupCommitter.store

    def counted(committer: group_commit.GroupCommitter, **kwargs: Any) -> Any:
        arrived.append(1)
        return store(committer, **kwargs)

    monkeypatch.setattr(group_commit.GroupCommitter, "store", counted)
    return arrived


def _wait_for(arrived: list[int], count: int, timeout: float = 30.0) -> None:
    """Until count requests have reached the committer (on a slow machine a fixed sleep let one
    arrive after the first group had committed, and form a third)."""
    deadline = time.monotonic() + timeout
    while len(arrived) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(arrived)} of {count} requests reached the group committer")
        time.sleep(0.05)
    time.sleep(0.2)  # and put themselves in its queue


def post_concurrently(key: str, bodies: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    answers: list[tuple[int, dict[str, Any]]] = [(0, {})] * len(bodies)

    def post(index: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        try:
            response = client.post(URL, bodies[index], format="json")
            answers[index] = (response.status_code, response.json())
        finally:
            connections.close_all()  # this thread's own connection: the test database must drop

    threads = [threading.Thread(target=post, args=(n,)) for n in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return answers


def transactions_of_stored_events() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(DISTINCT xmin::text) FROM events_event")
        return int(cursor.fetchone()[0])


def test_concurrent_single_events_share_a_transaction(api, arrivals):
    bodies = [{"type": f"held.{n}", "payload": {"n": n}} for n in range(12)]

    with commits_held():
        answered = []
        poster = threading.Thread(target=lambda: answered.extend(post_concurrently(api.key, bodies)))
        poster.start()
        _wait_for(arrivals, len(bodies))  # every request is waiting for its group now
        assert not answered and not Event.objects.exists()  # nothing acknowledged before its commit
    poster.join(timeout=30)

    assert [status for status, _ in answered] == [201] * 12
    assert Event.objects.count() == 12
    assert transactions_of_stored_events() <= 2  # the first event's group, then all the others


def test_one_refused_event_does_not_fail_its_group(api):
    assert api.post_json(URL, {"type": "a.b", "idempotency_key": "k-1"}).status_code == 201
    bodies = [{"type": f"group.{n}"} for n in range(6)] + [
        {"type": "a.b", "payload": {"x": 1}, "idempotency_key": "k-1"}
    ]
    bodies += [{"type": "a.b", "idempotency_key": "k-1"}]  # a retry of the first: a repeat

    with commits_held():
        answered = []
        poster = threading.Thread(target=lambda: answered.extend(post_concurrently(api.key, bodies)))
        poster.start()
        time.sleep(1.0)
    poster.join(timeout=30)

    statuses = [status for status, _ in answered]
    assert statuses[:6] == [201] * 6
    assert statuses[6] == 409
    assert answered[6][1]["errors"][0] == {  # named as for a single event, not "events[6]..."
        "field": "idempotency_key", "code": "idempotency_key_reused",
        "message": "This idempotency key is held by another event (for the dedupe window; for good if imported).",
    }  # fmt: skip
    assert statuses[7] == 200
    assert Event.objects.count() == 7


def test_a_request_whose_commit_takes_too_long_answers_503_and_its_retry_is_safe(api, settings):
    settings.AUDITSVC_GROUP_COMMIT_TIMEOUT_SECONDS = 1
    body = {"type": "slow.commit", "idempotency_key": "slow-1"}

    with commits_held():
        late = api.post_json(URL, body)
    retry = api.post_json(URL, body)

    assert late.status_code == 503
    assert late.json()["errors"][0]["code"] == "commit_timeout"
    assert late["Retry-After"]
    assert retry.status_code in (200, 201)
    assert Event.objects.filter(type__name="slow.commit").count() == 1


def test_without_group_commit_each_event_commits_alone(api, settings):
    settings.AUDITSVC_GROUP_COMMIT = False

    answered = post_concurrently(api.key, [{"type": "alone", "payload": {"n": n}} for n in range(4)])

    assert [status for status, _ in answered] == [201] * 4
    assert transactions_of_stored_events() == 4


def test_the_committer_stops_after_committing_and_starts_again(api):
    with commits_held():
        answered = []
        poster = threading.Thread(target=lambda: answered.extend(post_concurrently(api.key, [{"type": "last"}] * 3)))
        poster.start()
        time.sleep(0.5)
        stopper = threading.Thread(target=stop_group_commit)  # a worker leaving, with events in hand
        stopper.start()
    stopper.join(timeout=30)
    poster.join(timeout=30)

    assert [status for status, _ in answered] == [201] * 3
    assert not any(thread.name == "group-commit" for thread in threading.enumerate())
    assert api.post_json(URL, {"type": "after"}).status_code == 201  # a new committer
    assert Event.objects.count() == 4

"""One request's failure is its own (issue 24, item 4): through the group-commit thread that
production uses for every single event, outside any test transaction."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import psycopg
import pytest
from django.db import connection
from rest_framework.test import APIClient

from events.integrity.sealing import seal_events
from events.keys import create_api_key
from events.lifecycle.retention import apply_retention
from events.models import Event
from tests.database import drop_past_partitions
from tests.events.ingest.test_import_export import run_import, write_lines
from tests.factories import SourceFactory
from tests.processes import database_url, gunicorn

pytestmark = pytest.mark.django_db(transaction=True)

POISON = """
CREATE FUNCTION test_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payload->>'poison' = 'yes' THEN
        RAISE EXCEPTION 'poisoned row' USING ERRCODE = 'XX001';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_poison BEFORE INSERT ON events_event FOR EACH ROW EXECUTE FUNCTION test_poison();
"""


@pytest.fixture
def poisoned_inserts(transactional_db):
    with connection.cursor() as cursor:
        cursor.execute(POISON)
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER test_poison ON events_event; DROP FUNCTION test_poison()")


def client_of(api) -> APIClient:
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api.key}")
    return client


def test_an_unexpected_error_for_one_event_fails_only_its_own_request(api, poisoned_inserts):
    answers: dict[str, int] = {}

    def post(name: str, payload: dict[str, str]) -> None:
        response = client_of(api).post("/api/v1/events", {"type": "user.login", "actor": name, "payload": payload},
                                       format="json")  # fmt: skip
        answers[name] = response.status_code
        connection.close()

    # Hold the committer on its first event (the pending-seal insert waits for this lock), so
    # that the next four requests gather into one group behind it.
    with psycopg.connect(database_url().replace("postgres://", "postgresql://"), autocommit=False) as blocker:
        blocker.execute("LOCK TABLE events_pendingseal IN SHARE MODE")
        first = threading.Thread(target=post, args=("first", {}))
        first.start()
        time.sleep(0.5)
        group = [threading.Thread(target=post, args=(f"good-{n}", {})) for n in range(3)]
        group.append(threading.Thread(target=post, args=("poisoned", {"poison": "yes"})))
        for thread in group:
            thread.start()
        time.sleep(0.8)
        blocker.rollback()
    for thread in [first, *group]:
        thread.join(timeout=30)

    assert answers["poisoned"] >= 500
    assert {name: code for name, code in answers.items() if name != "poisoned"} == {
        "first": 201, "good-0": 201, "good-1": 201, "good-2": 201,
    }  # fmt: skip
    assert set(Event.objects.values_list("actor", flat=True)) == {"first", "good-0", "good-1", "good-2"}


def test_a_key_whose_event_retention_removed_is_a_clear_409_for_the_api_and_the_import(api, tmp_path, settings):
    drop_past_partitions()
    settings.AUDITSVC_SEAL_LAG_SECONDS = 0
    record = {"type": "user.login", "source": "billing", "idempotency_key": "order-7",
              "received_at": "2024-01-10T08:00:00Z"}  # fmt: skip
    assert run_import(str(write_lines(tmp_path / "old.ndjson", [json.dumps(record)])))[0] == 0
    assert seal_events()
    settings.AUDITSVC_RETENTION_DAYS = 400
    assert apply_retention(archive_dir=None).retired

    retry = client_of(api).post("/api/v1/events", {"type": "user.login", "idempotency_key": "order-7"}, format="json")

    assert retry.status_code == 409, retry.content
    assert retry.json()["errors"][0]["code"] == "idempotency_key_retired"
    again = {"type": "user.login", "source": "billing", "idempotency_key": "order-7"}
    rejects = tmp_path / "rejects.ndjson"
    status, _ = run_import(str(write_lines(tmp_path / "again.ndjson", [json.dumps(again)])), "--rejects", str(rejects))
    assert status == 1
    assert json.loads(rejects.read_text())["errors"][0]["code"] == "idempotency_key_retired"
    assert not Event.objects.filter(idempotency_key="order-7").exists()


def test_a_failure_a_retry_can_fix_is_a_503_with_retry_after_for_single_events_and_batches(transactional_db):
    key = create_api_key(source=SourceFactory.create(slug="billing"), scopes=["ingest"]).plaintext
    single = {"type": "user.login", "actor": "u1", "idempotency_key": "login-1"}
    batch = {"events": [{"type": "user.login", "actor": f"b{n}", "idempotency_key": f"b-{n}"} for n in range(3)]}
    # The service's statements give up after 300 ms: a lock held longer is a timeout, not a hang.
    with gunicorn(DB_STATEMENT_TIMEOUT_MS="300") as base:
        with psycopg.connect(database_url().replace("postgres://", "postgresql://")) as blocker:
            blocker.execute("LOCK TABLE events_pendingseal IN SHARE MODE")  # every insert of an event waits
            answers = [post(base, body, key) for body in (single, batch)]
            blocker.rollback()
        retries = [post(base, body, key) for body in (single, batch)]

    for status, retry_after, body in answers:
        assert (status, retry_after) == (503, "5"), body
        assert body["errors"][0]["code"] == "database_busy"
    assert [status for status, _, _ in retries] == [201, 201]
    assert Event.objects.count() == 4  # each once: the refused tries stored nothing


def post(base: str, body: object, key: str) -> tuple[int, str | None, Any]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    request = urllib.request.Request(f"{base}/api/v1/events", data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers.get("Retry-After"), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Retry-After"), json.loads(error.read())

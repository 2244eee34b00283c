"""import_events of another audit store's file: records with ids of their own (not our
UUIDv7s) get ids of ours, keep theirs as the idempotency key import-id:<id>, and a re-run stores
nothing twice; our own exports still restore as they were."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from events.ids import uuid7, uuid7_time
from events.ingest.import_identity import derived_key
from events.ingest.validation import parse_event
from events.models import Event
from tests.database import truncate
from tests.events.ingest.test_import_export import run_import, write_lines

pytestmark = pytest.mark.django_db(transaction=True)  # the importer's workers commit for real


def rejects_of(path: Path) -> list[tuple[int, str | None, str]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [(r["line"], r["errors"][0]["field"], r["errors"][0]["code"]) for r in map(json.loads, lines)]


def to_the_millisecond(instant: datetime) -> datetime:
    return instant.replace(microsecond=instant.microsecond // 1000 * 1000)


def test_records_with_another_stores_uuid4_ids_get_uuid7_ids_and_keep_theirs_readable(api, tmp_path):
    theirs = [str(uuid.uuid4()) for _ in range(5)]
    lines = [json.dumps({"id": theirs[n], "type": "user.login", "payload": {"n": n}}) for n in range(5)]
    path = write_lines(tmp_path / "theirs.ndjson", lines)
    before = timezone.now()

    status, out = run_import(str(path), "--source", api.source.slug)

    assert (status, out.endswith("read 5, stored 5, duplicates skipped 0, rejected 0\n")) == (0, True), out
    events = {event.idempotency_key: event for event in Event.objects.all()}
    assert set(events) == {f"import-id:{their_id}" for their_id in theirs}
    for event in events.values():
        assert before <= event.received_at <= timezone.now()  # received now
        assert uuid7_time(event.id) == to_the_millisecond(event.received_at)  # an id of ours, of that instant
    read = api.client.get(f"/api/v1/events/{events[f'import-id:{theirs[2]}'].id}").json()
    assert (read["idempotency_key"], read["payload"]) == (f"import-id:{theirs[2]}", {"n": 2})


def test_a_rerun_of_another_stores_file_stores_nothing_twice(api, tmp_path):
    lines = [json.dumps({"id": str(uuid.uuid4()), "type": "user.login", "payload": {"n": n}}) for n in range(4)]
    path = write_lines(tmp_path / "theirs.ndjson", lines)
    run_import(str(path), "--source", api.source.slug)
    first_ids = set(Event.objects.values_list("id", flat=True))

    status, out = run_import(str(path), "--source", api.source.slug)

    assert status == 0
    assert out.endswith("read 4, stored 0, duplicates skipped 4, rejected 0\n")
    assert set(Event.objects.values_list("id", flat=True)) == first_ids


def test_a_mixed_file_restores_ours_and_imports_theirs(api, tmp_path):
    # One of our own exported events, as export_events writes it.
    assert api.post_json("/api/v1/events", {"type": "ours.exported", "payload": {"n": 1}}).status_code == 201
    export = tmp_path / "export.ndjson"
    call_command("export_events", "--output", str(export), stderr=StringIO())
    ours = json.loads(export.read_text())
    truncate("events_event", "events_pendingseal", "events_idempotencykey")  # a fresh store to restore into
    received = datetime(2019, 3, 14, 15, 9, 26, tzinfo=UTC)
    lines = [
        json.dumps(ours),
        json.dumps({"id": "6f1c4c36-8a5b-4c7e-9b0e-2f4f3b1a9d10", "type": "theirs.v4"}),
        json.dumps({"id": "evt_000123", "type": "theirs.named", "received_at": received.isoformat(),
                    "hash": "their own digest"}),  # their receipt time kept; their hash not ours to check
        json.dumps({"id": 42, "type": "theirs.numbered"}),
        json.dumps({"id": str(uuid.uuid4()), "idempotency_key": "order-7", "type": "theirs.keyed"}),  # the key wins
        json.dumps({"type": "keyless"}),
        json.dumps({"id": str(uuid7()), "received_at": "2026-01-05T10:00:00Z", "type": "ours.mismatched"}),
        json.dumps({"id": "  ", "type": "theirs.blank_id"}),
        json.dumps({"id": {"n": 1}, "type": "theirs.object_id"}),
    ]  # fmt: skip
    path = write_lines(tmp_path / "mixed.ndjson", lines)
    rejects = tmp_path / "r.ndjson"

    first = run_import(str(path), "--source", api.source.slug, "--rejects", str(rejects))
    first_rejects = rejects_of(rejects)
    rejects.unlink()
    second = run_import(str(path), "--source", api.source.slug, "--rejects", str(rejects))

    assert (first[0], "read 9, stored 6, duplicates skipped 0, rejected 3\n" in first[1]) == (1, True), first
    assert "read 9, stored 0, duplicates skipped 6, rejected 3\n" in second[1], second
    assert first_rejects == rejects_of(rejects) == [
        (7, "id", "id_not_of_received_at"), (8, "id", "invalid"), (9, "id", "wrong_type"),
    ]  # fmt: skip
    stored = {event.type.name: event for event in Event.objects.select_related("type")}
    restored = stored["ours.exported"]
    assert (str(restored.id), restored.hash, restored.idempotency_key) == (ours["id"], ours["hash"], None)
    assert stored["theirs.v4"].idempotency_key == "import-id:6f1c4c36-8a5b-4c7e-9b0e-2f4f3b1a9d10"
    named = stored["theirs.named"]
    assert named.idempotency_key == "import-id:evt_000123"
    assert named.received_at == uuid7_time(named.id) == received
    assert stored["theirs.numbered"].idempotency_key == "import-id:42"
    assert stored["theirs.keyed"].idempotency_key == "order-7"
    assert (stored["keyless"].idempotency_key or "").startswith("import:")  # derived from its content
    assert all(event.id.version == 7 for event in stored.values())


def test_another_stores_id_seen_again_with_other_content_is_a_reject(api, tmp_path):
    their_id = str(uuid.uuid4())
    write_lines(tmp_path / "a.ndjson", [json.dumps({"id": their_id, "type": "a.b", "payload": {"n": 1}})])
    write_lines(tmp_path / "b.ndjson", [json.dumps({"id": their_id, "type": "a.b", "payload": {"n": 2}})])
    run_import(str(tmp_path / "a.ndjson"), "--source", api.source.slug)

    status, _ = run_import(str(tmp_path / "b.ndjson"), "--source", api.source.slug, "--rejects", str(tmp_path / "r"))

    assert status == 1
    assert rejects_of(tmp_path / "r") == [(1, "idempotency_key", "idempotency_key_reused")]
    assert Event.objects.get().payload == {"n": 1}


def test_another_stores_record_twice_in_one_file_is_stored_once(api, tmp_path):
    same = json.dumps({"id": str(uuid.uuid4()), "type": "a.b"})  # its id says it is one event
    path = write_lines(tmp_path / "theirs.ndjson", [same, json.dumps({"type": "c.d"}), same])

    status, out = run_import(str(path), "--source", api.source.slug)

    assert (status, Event.objects.count()) == (0, 2)
    assert out.endswith("read 3, stored 2, duplicates skipped 1, rejected 0\n")


def test_a_foreign_id_cannot_take_the_key_a_keyless_record_derives(api, tmp_path):
    keyless = json.dumps({"type": "user.login", "actor": "plain"})
    derived = derived_key(parse_event(json.loads(keyless)).fingerprint)  # the key the import derives
    squatter = json.dumps({"id": derived.removeprefix("import:"), "type": "user.login", "actor": "squatter"})
    path = write_lines(tmp_path / "both.ndjson", [squatter, keyless])

    status, _ = run_import(str(path), "--source", api.source.slug)

    assert status == 0
    assert set(Event.objects.values_list("actor", flat=True)) == {"plain", "squatter"}

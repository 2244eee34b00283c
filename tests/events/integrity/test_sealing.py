"""Tamper evidence: seals, verification of each kind of tampering, proofs, concurrency."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from io import StringIO
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from events.ingest.validation import parse_event
from events.ingest.write import ingest_events
from events.integrity import signing
from events.integrity.sealing import seal_events
from events.integrity.verification import verify_integrity
from events.integrity.verify_proof import check
from events.models import Event, PendingSeal, Seal, SealEntry
from tests.database import triggers_off

URL = "/api/v1/events"
SIGNING_KEY = base64.b64encode(Ed25519PrivateKey.generate().private_bytes_raw()).decode()


@pytest.fixture(autouse=True)
def _signed(settings):
    settings.AUDIT_SIGNING_KEY = SIGNING_KEY
    settings.AUDITSVC_SEAL_LAG_SECONDS = 0
    signing.forget_keys()
    yield
    signing.forget_keys()


def store(api, count: int, **fields) -> list[str]:
    body = {"events": [{"type": "billing.charged", "customer": f"cus_{n % 3}", "payload": {"n": n}, **fields}
                       for n in range(count)]}  # fmt: skip
    response = api.post_json(URL, body)
    assert response.status_code == 201
    return [event["id"] for event in response.json()["events"]]


def tamper(sql: str, params: list[Any] | None = None) -> None:
    """Change rows as a superuser would: with the append-only triggers switched off."""
    with triggers_off(), connection.cursor() as cursor:
        cursor.execute(sql, params or [])


def findings() -> list[tuple[str, str | None, int | None]]:
    return [(f.kind, f.event_id, f.seal) for f in verify_integrity().findings]


@pytest.fixture
def sealed(api) -> list[str]:
    """Two signed seals: 10 events, then 7."""
    ids = store(api, 10)
    seal_events()
    ids += store(api, 7)
    seal_events()
    return ids


def test_sealing_chains_signs_and_empties_the_queue(sealed):
    first, second = Seal.objects.order_by("sequence")

    assert (first.event_count, second.event_count) == (10, 7)
    assert second.previous_hash == first.hash
    assert first.previous_hash == "0" * 64
    assert first.signature and first.key_id
    assert SealEntry.objects.count() == 17
    assert PendingSeal.objects.count() == 0
    assert findings() == []


def test_verify_events_command_reports_ok_and_json(sealed):
    out = StringIO()
    call_command("verify_events", "--json", stdout=out)

    report = json.loads(out.getvalue())
    assert report["ok"] is True
    assert report["events_checked"] == 17
    assert report["seals_checked"] == 2


def test_a_changed_payload_is_reported(sealed):
    tamper("UPDATE events_event SET payload = '{\"n\": 999}' WHERE id = %s", [sealed[3]])

    assert findings() == [("event_modified", sealed[3], 1)]


def test_a_changed_time_with_a_recomputed_hash_is_still_reported(sealed):
    # The attacker even rewrites the event's own hash column: the seal still remembers.
    event = Event.objects.select_related("type", "source", "customer").get(id=sealed[12])
    tamper("UPDATE events_event SET occurred_at = occurred_at - interval '1 day', hash = %s WHERE id = %s",
           ["0" * 64, sealed[12]])  # fmt: skip

    assert findings() == [("event_modified", sealed[12], 2)]
    assert event.hash != "0" * 64


def test_a_deleted_event_is_reported(sealed):
    tamper("DELETE FROM events_event WHERE id = %s", [sealed[0]])

    assert findings() == [("event_missing", sealed[0], 1)]


def test_an_inserted_event_is_reported(sealed, api):
    inserted = f"{str(sealed[4])[:-12]}{'f' * 12}"  # beside a sealed one, in its month's partition
    tamper(
        "INSERT INTO events_event (id, type_id, source_id, actor, occurred_at, received_at, payload, hash) "
        "SELECT %s, type_id, source_id, 'mallory', occurred_at, received_at, '{}', hash FROM events_event "
        "WHERE id = %s",
        [inserted, sealed[4]],
    )

    assert findings() == [("event_inserted", inserted, None)]


def test_a_swapped_order_is_reported(sealed):
    for old, new in ((1, -1), (2, 1), (-1, 2)):  # (seal, position) is unique, so three steps
        tamper("UPDATE events_sealentry SET position = %s WHERE seal_id = 1 AND position = %s", [new, old])

    assert findings() == [("merkle_root_mismatch", None, 1)]


def test_a_rewritten_seal_is_reported(sealed):
    tamper("UPDATE events_seal SET event_count = 9 WHERE sequence = 1")

    kinds = {kind for kind, _, _ in findings()}
    assert {"seal_modified", "seal_entries_missing"} <= kinds


def test_a_rewritten_seal_with_a_recomputed_hash_breaks_the_chain(sealed):
    seal = Seal.objects.get(sequence=1)
    seal.merkle_root = "ab" * 32
    from events.integrity.sealing import seal_hash  # noqa: PLC0415

    tamper("UPDATE events_seal SET merkle_root = %s, hash = %s WHERE sequence = 1", [seal.merkle_root, seal_hash(seal)])

    kinds = [(kind, s) for kind, _, s in findings()]
    assert ("chain_broken", 2) in kinds
    assert ("merkle_root_mismatch", 1) in kinds
    assert ("signature_invalid", 1) in kinds


def test_a_forged_signature_is_reported(sealed):
    forged = Ed25519PrivateKey.generate().sign(bytes.fromhex(Seal.objects.get(sequence=2).hash)).hex()
    tamper("UPDATE events_seal SET signature = %s WHERE sequence = 2", [forged])

    assert findings() == [("signature_invalid", None, 2)]


def test_verify_events_exits_non_zero_on_a_finding(sealed):
    tamper("DELETE FROM events_event WHERE id = %s", [sealed[1]])
    out = StringIO()

    with pytest.raises(SystemExit) as exit_info:
        call_command("verify_events", stdout=out)

    assert exit_info.value.code == 1
    assert f"event_missing: event {sealed[1]}" in out.getvalue()


# --- append-only --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # TRUNCATE needs a transaction with no pending FK checks
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE events_event SET actor = 'x'",
        "DELETE FROM events_event",
        "TRUNCATE events_event CASCADE",
        "UPDATE events_seal SET event_count = 0",
        "DELETE FROM events_sealentry",
        "TRUNCATE events_seal CASCADE",
    ],
)
def test_the_application_role_cannot_rewrite_history(sealed, sql):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)
    assert Event.objects.count() == 17
    assert Seal.objects.count() == 2


# --- proofs ---------------------------------------------------------------------------------


def test_a_proof_verifies_offline(api, sealed, tmp_path):
    proof = api.client.get(f"{URL}/{sealed[13]}/proof").json()
    public_key = api.client.get("/api/v1/integrity/public-key").json()["public_key_hex"]
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(proof))

    result = subprocess.run(
        [sys.executable, "-m", "events.integrity.verify_proof", str(path), "--public-key", public_key],
        capture_output=True, text=True, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout
    assert "proof verified" in result.stdout
    assert proof["proof"]["seal"]["sequence"] == 2
    assert proof["proof"]["previous_seal"]["sequence"] == 1


def test_a_proof_for_a_tampered_event_fails(api, sealed):
    proof = api.client.get(f"{URL}/{sealed[2]}/proof").json()
    public_key = api.client.get("/api/v1/integrity/public-key").json()["public_key_hex"]

    proof["event"]["payload"] = {"n": 1000}
    failed = {name for name, passed, _ in check(proof, public_key) if not passed}
    assert failed == {"event hash"}

    proof["event"]["hash"] = check(proof, public_key)[0][2]  # the attacker recomputes the hash too
    failed = {name for name, passed, _ in check(proof, public_key) if not passed}
    assert failed == {"merkle inclusion"}


def test_a_proof_signed_by_another_key_fails(api, sealed):
    proof = api.client.get(f"{URL}/{sealed[2]}/proof").json()
    other = Ed25519PrivateKey.generate().public_key()

    results = {name: passed for name, passed, _ in check(proof, signing.public_key_bytes(other).hex())}

    assert results["signature"] is False


def test_an_unsealed_event_has_no_proof_yet(api):
    event_id = store(api, 1)[0]

    response = api.client.get(f"{URL}/{event_id}/proof")

    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "not_sealed"


def test_seals_are_listed_newest_first(api, sealed):
    body = api.client.get("/api/v1/integrity/seals").json()

    assert [s["sequence"] for s in body["results"]] == [2, 1]
    assert body["results"][0]["signature"]


# --- concurrency ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_sealers_never_overlap_or_skip(make_client):
    api = make_client()
    for _ in range(6):
        store(api, 50)
    results: list[int] = []

    def sealer() -> None:
        for _ in range(5):
            results.extend(seal.event_count for seal in seal_events(max_events=40))
        connection.close()

    threads = [threading.Thread(target=sealer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seal_events(max_events=40)

    assert SealEntry.objects.count() == 300  # every event once (primary key: event_id)
    assert sum(Seal.objects.values_list("event_count", flat=True)) == 300
    assert list(Seal.objects.order_by("sequence").values_list("sequence", flat=True)) == list(
        range(1, Seal.objects.count() + 1)
    )
    assert findings() == []


@pytest.mark.django_db(transaction=True)
def test_an_event_committed_late_is_sealed_exactly_once(make_client):
    api = make_client()
    store(api, 5)
    in_transaction, may_commit = threading.Event(), threading.Event()

    def slow_ingest() -> None:
        # received_at is taken now, but the commit comes after a seal has been made.
        with transaction.atomic():
            ingest_events(source=api.source, items=[parse_event({"type": "late.commit"})])
            in_transaction.set()
            may_commit.wait(10)
        connection.close()

    thread = threading.Thread(target=slow_ingest)
    thread.start()
    in_transaction.wait(10)
    first = seal_events()
    may_commit.set()
    thread.join()
    second = seal_events()

    assert [s.event_count for s in first] == [5]
    assert [s.event_count for s in second] == [1]
    late = Event.objects.get(type__name="late.commit")
    assert SealEntry.objects.get(event_id=late.id).seal_id == second[0].sequence
    assert findings() == []


def test_verification_handles_payloads_orjson_does_not_write_canonically(api):
    # 100.0 must hash as 100, 1e-07 as 1e-7: verification's fast path misses, the exact one decides.
    store(api, 2, payload={"x": 100.0, "y": 1e-7, "z": 1e16, "é": -0.0})
    seal_events()

    assert findings() == []


@pytest.mark.django_db(transaction=True)  # the worker processes read what this one committed
def test_verification_in_worker_processes_reports_the_same_findings(make_client):
    api = make_client()
    ids = []
    for _ in range(6):
        ids += store(api, 9)
        seal_events()
    ids += store(api, 2)  # unsealed, pending
    tamper("UPDATE events_event SET payload = '{\"n\": -1}' WHERE id = %s", [ids[3]])
    tamper("DELETE FROM events_event WHERE id = %s", [ids[40]])
    for old, new in ((1, -1), (2, 1), (-1, 2)):
        tamper("UPDATE events_sealentry SET position = %s WHERE seal_id = 5 AND position = %s", [new, old])

    serial = verify_integrity()
    parallel = verify_integrity(workers=2)
    out = StringIO()
    with pytest.raises(SystemExit):
        call_command("verify_events", "--workers", "3", stdout=out)

    assert parallel.findings == serial.findings
    assert [f.kind for f in serial.findings] == ["event_modified", "event_missing", "merkle_root_mismatch"]
    assert (parallel.events_checked, parallel.unsealed_events) == (serial.events_checked, 2) == (56, 2)
    assert "Checked 56 events (2 not yet sealed) and 6 seals: 3 finding(s)." in out.getvalue()

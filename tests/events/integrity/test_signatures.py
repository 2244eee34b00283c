"""Signatures that cannot be stripped: with a known public key, every seal must be signed by a
trusted key, in verify_events and in the offline proof checker alike; key rotation; PEM keys."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from io import StringIO
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import call_command
from django.db import connection

from events.integrity import merkle, signing
from events.integrity.canonical import canonical_json
from events.integrity.hashing import envelope
from events.integrity.sealing import GENESIS_HASH, seal_events, seal_hash
from events.integrity.verification import verify_integrity
from events.integrity.verify_proof import check
from events.models import Event, Seal, SealEntry
from tests.database import triggers_off

URL = "/api/v1/events"


def seed(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.private_bytes_raw()).decode()


def public_hex(key: Ed25519PrivateKey) -> str:
    return signing.public_key_bytes(key.public_key()).hex()


def pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


OURS = Ed25519PrivateKey.generate()
THEIRS = Ed25519PrivateKey.generate()


@pytest.fixture
def signed(settings):
    settings.AUDIT_SIGNING_KEY = seed(OURS)
    settings.AUDITSVC_SEAL_LAG_SECONDS = 0
    signing.forget_keys()


def store_and_seal(api, count: int) -> list[str]:
    body = {"events": [{"type": "billing.charged", "customer": "cus_1", "payload": {"n": n}} for n in range(count)]}
    response = api.post_json(URL, body)
    assert response.status_code == 201
    assert seal_events()
    return [event["id"] for event in response.json()["events"]]


def as_superuser(*statements: tuple[str, list[Any]]) -> None:
    """Rewrite rows as a database superuser can: with the append-only triggers switched off."""
    with triggers_off(), connection.cursor() as cursor:
        for sql, params in statements:
            cursor.execute(sql, params)


def kinds() -> set[str]:
    return {finding.kind for finding in verify_integrity().findings}


def rewrite_history_and_rechain(event_id: str, payload: dict[str, object]) -> None:
    """The attack: change an event, recompute its hash, its seal's Merkle root, every seal's
    hash and link, and drop the signatures an attacker cannot make."""
    event = Event.objects.select_related("type", "source", "customer").get(pk=event_id)
    fields = envelope(
        event.id, event.type.name, event.source.slug, event.customer.external_id if event.customer else None,
        event.actor, event.occurred_at, event.received_at, event.description, payload,
    )  # fmt: skip
    new_hash = hashlib.sha256(canonical_json(fields)).hexdigest()
    as_superuser(
        ("UPDATE events_event SET payload = %s::jsonb, hash = %s WHERE id = %s", [json.dumps(payload), new_hash, event_id]),  # noqa: E501
        ("UPDATE events_sealentry SET event_hash = %s WHERE event_id = %s", [new_hash, event_id]),
    )  # fmt: skip
    previous = GENESIS_HASH
    for seal in Seal.objects.order_by("sequence"):
        hashes = SealEntry.objects.filter(seal=seal).order_by("position").values_list("event_hash", flat=True)
        seal.merkle_root = merkle.merkle_root([merkle.leaf_hash(bytes.fromhex(h)) for h in hashes]).hex()
        seal.previous_hash = previous
        seal.hash = seal_hash(seal)
        as_superuser((
            "UPDATE events_seal SET merkle_root = %s, previous_hash = %s, hash = %s, signature = '', key_id = '' "
            "WHERE sequence = %s",
            [seal.merkle_root, seal.previous_hash, seal.hash, seal.sequence],
        ))  # fmt: skip
        previous = seal.hash


def test_it_fails_a_rewritten_and_rechained_history_whose_signatures_were_stripped(api, signed):
    ids = store_and_seal(api, 5)
    store_and_seal(api, 3)
    assert kinds() == set()

    rewrite_history_and_rechain(ids[2], {"n": 1_000_000})

    # Everything but the signatures was made consistent again: only they give it away.
    assert kinds() == {"seal_unsigned"}
    assert {f.seal for f in verify_integrity().findings} == {1, 2}


def test_it_fails_a_seal_signed_with_a_key_nobody_trusts(api, signed):
    store_and_seal(api, 3)
    seal = Seal.objects.get()
    forged = THEIRS.sign(bytes.fromhex(seal.hash)).hex()

    as_superuser(("UPDATE events_seal SET signature = %s, key_id = %s", [forged, signing.key_id(THEIRS.public_key())]))
    assert kinds() == {"signature_unknown_key"}

    as_superuser(("UPDATE events_seal SET key_id = %s", [signing.key_id(OURS.public_key())]))
    assert kinds() == {"signature_invalid"}


def test_verify_events_trusts_only_the_keys_given_on_the_command_line(api, signed):
    store_and_seal(api, 3)
    out = StringIO()

    call_command("verify_events", "--public-key", public_hex(OURS), stdout=out)
    assert "OK" in out.getvalue()

    with pytest.raises(SystemExit):
        call_command("verify_events", "--public-key", public_hex(THEIRS), stdout=(out := StringIO()))
    assert "signature_unknown_key" in out.getvalue()


def test_a_process_that_only_verifies_needs_only_the_public_key(api, signed, settings):
    store_and_seal(api, 3)
    settings.AUDIT_SIGNING_KEY = None
    settings.AUDIT_PUBLIC_KEYS = public_hex(OURS)
    signing.forget_keys()

    report = verify_integrity()
    as_superuser(("UPDATE events_seal SET signature = ''", []))

    assert report.signatures_checked and report.ok
    assert kinds() == {"seal_unsigned"}


def test_without_any_known_key_the_report_says_signatures_were_not_checked(api, settings):
    settings.AUDITSVC_SEAL_LAG_SECONDS = 0
    store_and_seal(api, 2)  # development without a key: unsigned seals
    err = StringIO()

    call_command("verify_events", stdout=StringIO(), stderr=err)

    assert not verify_integrity().signatures_checked
    assert "Signatures not checked" in err.getvalue()


def test_key_rotation_keeps_old_seals_verifiable(api, signed, settings):
    old_ids = store_and_seal(api, 3)
    settings.AUDIT_SIGNING_KEY = seed(THEIRS)  # the new key signs from now on
    signing.forget_keys()
    store_and_seal(api, 2)
    assert kinds() == {"signature_unknown_key"}  # the old key is not trusted yet

    settings.AUDIT_PUBLIC_KEYS = public_hex(OURS)  # rotated out, kept for verification
    signing.forget_keys()
    keys = api.client.get("/api/v1/integrity/public-key").json()
    proof = api.client.get(f"{URL}/{old_ids[0]}/proof").json()

    assert kinds() == set()
    assert [s.key_id for s in Seal.objects.order_by("sequence")] == [
        signing.key_id(OURS.public_key()), signing.key_id(THEIRS.public_key()),
    ]  # fmt: skip
    assert keys["public_key_hex"] == public_hex(THEIRS)
    assert {k["public_key_hex"] for k in keys["keys"]} == {public_hex(OURS), public_hex(THEIRS)}
    assert proof["proof"]["public_key"] == public_hex(OURS)  # the key that signed that seal
    assert all(passed for _, passed, _ in check(proof, [public_hex(OURS), public_hex(THEIRS)]))


def test_pem_keys_sign_and_verify(api, settings):
    settings.AUDIT_SIGNING_KEY = pem(OURS)
    settings.AUDITSVC_SEAL_LAG_SECONDS = 0
    signing.forget_keys()
    store_and_seal(api, 2)
    public_pem = signing.public_key_pem(OURS.public_key())
    settings.AUDIT_SIGNING_KEY = None
    settings.AUDIT_PUBLIC_KEYS = public_pem
    signing.forget_keys()

    assert Seal.objects.get().key_id == signing.key_id(OURS.public_key())
    assert verify_integrity().signatures_checked
    assert kinds() == set()


def test_the_offline_checker_fails_a_proof_whose_signature_was_removed(api, signed, tmp_path):
    event_id = store_and_seal(api, 3)[1]
    proof = api.client.get(f"{URL}/{event_id}/proof").json()
    proof["proof"]["seal"]["signature"] = None
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(proof))

    result = subprocess.run(
        [sys.executable, "-m", "events.integrity.verify_proof", str(path), "--public-key", public_hex(OURS)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    without_trusted_key = {name: passed for name, passed, _ in check(proof)}  # the key inside the proof

    assert result.returncode == 1
    assert "FAIL signature: the seal is unsigned" in result.stdout
    assert without_trusted_key["signature"] is False


def test_the_offline_checker_fails_a_proof_signed_by_an_unknown_key_id(api, signed):
    event_id = store_and_seal(api, 3)[0]
    proof = api.client.get(f"{URL}/{event_id}/proof").json()
    seal = proof["proof"]["seal"]
    seal["signature"] = THEIRS.sign(bytes.fromhex(seal["hash"])).hex()
    seal["key_id"] = signing.key_id(THEIRS.public_key())

    results = {name: (passed, detail) for name, passed, detail in check(proof, public_hex(OURS))}

    assert results["signature"] == (False, f"signed by key {seal['key_id']}, not by the trusted key")

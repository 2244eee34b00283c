"""Check an event's inclusion proof offline: `python -m events.integrity.verify_proof proof.json [--public-key HEX]`.

Standard library + `cryptography` only (no Django, no database): give it the JSON from
GET /api/v1/events/{id}/proof. It recomputes the event's hash (RFC 8785 + SHA-256), the
Merkle root from the audit path, the seal's hash and its link to the previous seal, and
verifies the Ed25519 signature. Pass the public key you trust (GET
/api/v1/integrity/public-key, obtained independently); the key inside the proof only shows
that the proof is self-consistent.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from events.integrity.merkle import leaf_hash, root_from_proof

ENVELOPE_FIELDS = ("id", "type", "source", "customer", "actor", "occurred_at", "received_at", "description", "payload")
SEAL_FIELDS = (
    "sequence", "created_at", "event_count", "first_received_at", "last_received_at", "merkle_root", "previous_hash",
)  # fmt: skip


def jcs(value: Any) -> str:
    """RFC 8785 canonical JSON (a small, dependency-free implementation)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _es_number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(jcs(item) for item in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))  # UTF-16 code unit order
        return "{" + ",".join(f"{jcs(k)}:{jcs(value[k])}" for k in keys) + "}"
    raise TypeError(f"not JSON: {type(value).__name__}")


def _es_number(value: float) -> str:
    """ECMAScript Number.prototype.toString, from Python's shortest round-trip digits."""
    if not math.isfinite(value):
        raise ValueError("JSON has no NaN or Infinity")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction.rstrip("0")).lstrip("0") if fraction != "0" else whole.lstrip("0")
    # n: the position of the decimal point relative to the digit string (ES spec's n).
    n = len(whole.lstrip("0")) + int(exponent or 0) if whole != "0" else -(len(fraction) - len(fraction.lstrip("0")))
    if whole == "0":
        n += int(exponent or 0)
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    e = n - 1
    exponent_text = f"e{'+' if e > 0 else '-'}{abs(e)}"
    return sign + digits[0] + ("." + digits[1:] if k > 1 else "") + exponent_text


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def check(
    proof_document: dict[str, Any], trusted_keys: Sequence[str] | str | None = None
) -> list[tuple[str, bool, str]]:
    """[(check, passed, detail)] for every step of the proof; trusted_keys: hex public keys."""
    event, proof = proof_document["event"], proof_document["proof"]
    seal, previous = proof["seal"], proof.get("previous_seal")
    results: list[tuple[str, bool, str]] = []

    fields = {name: event[name] for name in ENVELOPE_FIELDS}
    if event.get("origin") is not None:  # hashed only where present (docs/integrity.md)
        fields["origin"] = event["origin"]
    recomputed = sha256_hex(jcs(fields))
    results.append(("event hash", recomputed == event["hash"], recomputed))
    try:
        root = root_from_proof(
            leaf_hash(bytes.fromhex(event["hash"])),
            proof["leaf_index"],
            proof["tree_size"],
            [bytes.fromhex(node) for node in proof["audit_path"]],
        ).hex()
    except ValueError as exc:
        root = f"invalid audit path: {exc}"
    results.append(("merkle inclusion", root == seal["merkle_root"], root))
    results.append(("tree size", proof["tree_size"] == seal["event_count"], str(seal["event_count"])))
    seal_recomputed = sha256_hex(jcs({name: seal[name] for name in SEAL_FIELDS}))
    results.append(("seal hash", seal_recomputed == seal["hash"], seal_recomputed))
    if previous is None:
        results.append(("chain link", seal["sequence"] == 1 and seal["previous_hash"] == "0" * 64, "first seal"))
    else:
        previous_recomputed = sha256_hex(jcs({name: previous[name] for name in SEAL_FIELDS}))
        linked = previous_recomputed == previous["hash"] == seal["previous_hash"]
        results.append(("chain link", linked and previous["sequence"] == seal["sequence"] - 1, previous["hash"]))
    keys = [trusted_keys] if isinstance(trusted_keys, str) else list(trusted_keys or [])
    origin = "trusted key"
    if not keys and proof.get("public_key"):
        keys, origin = [proof["public_key"]], "key in proof"
    if keys:
        # A known key makes the signature mandatory: stripping it, or signing with a key of
        # one's own, must fail the proof rather than skip the check.
        results.append(("signature", *_signature_check(seal, keys, origin)))
    return results


def key_id(key_hex: str) -> str:
    """The service's key id: the first 16 hex digits of SHA-256 over the raw public key."""
    return hashlib.sha256(bytes.fromhex(key_hex)).hexdigest()[:16]


def _signature_check(seal: dict[str, Any], keys: list[str], origin: str) -> tuple[bool, str]:
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415 - only needed with a key
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: PLC0415

    if not seal.get("signature"):
        return False, "the seal is unsigned, but a public key is known"
    try:
        by_id = {key_id(key): key for key in keys}
    except ValueError:
        return False, "a public key is not hex"
    key_hex = by_id.get(seal.get("key_id") or "")
    if key_hex is None:
        return False, f"signed by key {seal.get('key_id')}, not by the {origin}"
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex)).verify(
            bytes.fromhex(seal["signature"]), bytes.fromhex(seal["hash"])
        )
    except (InvalidSignature, ValueError):
        return False, f"does not verify with the {origin}"
    return True, origin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("proof", help="the JSON of GET /api/v1/events/{id}/proof ('-' for stdin)")
    parser.add_argument(
        "--public-key",
        action="append",
        help="a trusted Ed25519 public key, hex (from /api/v1/integrity/public-key); repeat for rotated keys",
    )
    args = parser.parse_args(argv)
    with sys.stdin if args.proof == "-" else open(args.proof, encoding="utf-8") as handle:
        document = json.load(handle)
    results = check(document, args.public_key)
    for name, passed, detail in results:
        print(f"{'OK  ' if passed else 'FAIL'} {name}: {detail}")
    if not any(name == "signature" for name, _, _ in results):
        print("note: signature not checked: no --public-key given and none in the proof")
    ok = all(passed for _, passed, _ in results)
    print("proof verified" if ok else "proof FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

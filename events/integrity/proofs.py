"""Inclusion proofs of sealed events, checked offline by events.integrity.verify_proof."""

from __future__ import annotations

import uuid
from typing import Any

from events.integrity import merkle, signing
from events.integrity.sealing import seal_document
from events.models import Seal, SealEntry


def inclusion_proof_for(event_id: uuid.UUID) -> dict[str, Any] | None:
    """The Merkle inclusion proof of a sealed event, with its seal and the seal before it."""
    entry = SealEntry.objects.filter(event_id=event_id).select_related("seal").first()
    if entry is None:
        return None
    hashes = SealEntry.objects.filter(seal_id=entry.seal_id).order_by("position").values_list("event_hash", flat=True)
    leaves = [merkle.leaf_hash(bytes.fromhex(h)) for h in hashes]
    previous = Seal.objects.filter(sequence=entry.seal.sequence - 1).first()
    # The key that signed this seal (after a rotation, maybe not the current one); the
    # verifier should still be given the key it trusts, obtained independently.
    key = signing.trusted_public_keys().get(entry.seal.key_id)
    return {
        "leaf_index": entry.position,
        "tree_size": len(leaves),
        "audit_path": [node.hex() for node in merkle.inclusion_proof(entry.position, leaves)],
        "seal": seal_output(entry.seal),
        "previous_seal": seal_output(previous) if previous else None,
        "public_key": signing.public_key_bytes(key).hex() if key else None,
    }


def seal_output(seal: Seal) -> dict[str, Any]:
    return {
        **seal_document(seal),
        "hash": seal.hash,
        "signature": seal.signature or None,
        "key_id": seal.key_id or None,
    }

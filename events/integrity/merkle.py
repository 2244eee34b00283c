"""RFC 6962 (Certificate Transparency) Merkle trees: roots and inclusion proofs.

Standard library only: events.integrity.verify_proof imports this to check proofs offline.
Leaves are SHA-256(0x00 || event hash); inner nodes SHA-256(0x01 || left || right); a tree
of n leaves splits at the largest power of two below n.
"""

from __future__ import annotations

import hashlib


def leaf_hash(event_hash: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + event_hash).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two strictly below size (size > 1)."""
    return 1 << ((size - 1).bit_length() - 1)


def merkle_root(leaves: list[bytes]) -> bytes:
    """Root over leaf hashes, bottom-up in O(n) (equal to RFC 6962's recursive MTH)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = list(leaves)
    while len(level) > 1:
        # Pairing left to right and carrying an odd last node up reproduces the RFC split.
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def inclusion_proof(index: int, leaves: list[bytes]) -> list[bytes]:
    """The audit path of leaf index (RFC 6962 PATH(m, D[n]))."""
    if len(leaves) <= 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_proof(index, leaves[:k]), merkle_root(leaves[k:])]
    return [*inclusion_proof(index - k, leaves[k:]), merkle_root(leaves[:k])]


def root_from_proof(leaf: bytes, index: int, size: int, path: list[bytes]) -> bytes:
    """The root that leaf at index in a tree of size leaves implies, given its audit path
    (RFC 9162 section 2.1.3.2); compare it with the sealed root."""
    if not 0 <= index < size:
        raise ValueError("index outside the tree")
    fn, sn, node = index, size - 1, leaf
    for sibling in path:
        if sn == 0:
            raise ValueError("audit path is too long")
        if fn & 1 or fn == sn:
            node = node_hash(sibling, node)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            node = node_hash(node, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("audit path is too short")
    return node

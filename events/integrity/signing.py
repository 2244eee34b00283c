"""Ed25519 signatures on seals, and the public keys that verification trusts.

AUDIT_SIGNING_KEY (PEM, or base64 of the 32-byte seed) signs; only the sealer needs it.
AUDIT_PUBLIC_KEYS lists the public keys to trust besides it: the keys of earlier rotations,
and in processes that only verify (web workers, an auditor's machine), the sealer's key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from functools import cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

_PEM_BLOCK = re.compile(r"-----BEGIN [A-Z ]+-----.+?-----END [A-Z ]+-----", re.S)


@cache
def signing_key() -> Ed25519PrivateKey | None:
    raw = settings.AUDIT_SIGNING_KEY
    return load_private_key(raw, name="AUDIT_SIGNING_KEY") if raw else None


def load_private_key(raw: str, *, name: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM, or from base64 of its 32-byte seed."""
    try:
        if raw.lstrip().startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(raw.encode(), password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(raw.strip(), validate=True))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ImproperlyConfigured(f"{name} is not an Ed25519 private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ImproperlyConfigured(f"{name} must be an Ed25519 key.")
    return key


def parse_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key written as hex or base64 of its 32 raw bytes, or as PEM."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("not an Ed25519 key")
            return key
        raw = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ValueError(f"not an Ed25519 public key ({exc}): {text[:20]}…") from None


def parse_public_keys(text: str) -> list[Ed25519PublicKey]:
    """Several keys: PEM blocks, and hex or base64 keys separated by commas or whitespace."""
    blocks = _PEM_BLOCK.findall(text)
    rest = _PEM_BLOCK.sub(" ", text)
    return [parse_public_key(item) for item in [*blocks, *re.split(r"[\s,]+", rest)] if item.strip()]


@cache
def trusted_public_keys() -> dict[str, Ed25519PublicKey]:
    """key id → public key: AUDIT_PUBLIC_KEYS and the signing key's own."""
    try:
        keys = parse_public_keys(settings.AUDIT_PUBLIC_KEYS)
    except ValueError as exc:
        raise ImproperlyConfigured(f"AUDIT_PUBLIC_KEYS: {exc}") from None
    private = signing_key()
    if private is not None:
        keys.append(private.public_key())
    return {key_id(key): key for key in keys}


def forget_keys() -> None:
    """Read the key settings again (tests that change them)."""
    signing_key.cache_clear()
    trusted_public_keys.cache_clear()


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def key_id(key: Ed25519PublicKey) -> str:
    """A short fingerprint naming the key that signed a seal (key rotation)."""
    return hashlib.sha256(public_key_bytes(key)).hexdigest()[:16]


def sign(message: bytes) -> tuple[str, str]:
    """(hex signature, key id), or ("", "") when no signing key is configured (development)."""
    key = signing_key()
    if key is None:
        return "", ""
    return key.sign(message).hex(), key_id(key.public_key())


def verify(message: bytes, signature_hex: str, public_key: Ed25519PublicKey) -> bool:
    try:
        public_key.verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def signature_problem(
    *, seal_hash: str, signature: str, signer: str, keys: dict[str, Ed25519PublicKey]
) -> tuple[str, str] | None:
    """(finding kind, why) when a seal's signature does not hold up against keys, else None.

    With trusted keys, a seal must be signed, by one of them: a signature that was stripped
    (and the chain re-hashed) or made with a key of the attacker's is a finding, not a skip.
    """
    if not signature:
        return "seal_unsigned", "is not signed"
    public_key = keys.get(signer)
    if public_key is None:
        return "signature_unknown_key", f"is signed by key {signer or '(none)'}, which is not trusted"
    if not verify(bytes.fromhex(seal_hash), signature, public_key):
        return "signature_invalid", "has a signature that does not verify"
    return None

"""Ed25519 signing of seals with AUDIT_SIGNING_KEY (PEM, or base64 of the 32-byte seed)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from functools import cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@cache
def signing_key() -> Ed25519PrivateKey | None:
    raw = settings.AUDIT_SIGNING_KEY
    if not raw:
        return None
    try:
        if raw.lstrip().startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(raw.encode(), password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(raw, validate=True))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ImproperlyConfigured(f"AUDIT_SIGNING_KEY is not an Ed25519 private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ImproperlyConfigured("AUDIT_SIGNING_KEY must be an Ed25519 key.")
    return key


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def key_id(key: Ed25519PublicKey) -> str:
    """A short fingerprint naming the key that signed a seal (key rotation)."""
    return hashlib.sha256(public_key_bytes(key)).hexdigest()[:16]


def sign(message: bytes) -> tuple[str, str]:
    """(hex signature, key id), or ("", "") when no signing key is configured."""
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

"""The keys behind protected fields: AUDITSVC_DATA_KEY (the master key), the HMAC key derived
from it for sensitive fields, and each customer's data key for personal fields, stored wrapped
(AES-GCM) under the master key, with the customer as associated data. Erasure destroys a
customer's wrapped keys (events.erasure).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from events.models import CustomerDataKey


class UnreadableDataKeys(Exception):
    """Live data keys that do not unwrap under the master key: their customers' personal values
    can be neither encrypted nor stored plain (events.protection answers 503 data_key_unreadable)."""

    def __init__(self, customers: set[str]) -> None:
        super().__init__(", ".join(sorted(customers)))
        self.customers = customers


def master_key() -> bytes:
    """AUDITSVC_DATA_KEY: 32 bytes, base64. Outside production, derived from SECRET_KEY when
    unset (a checked warning says so), so that development needs no setup."""
    return _master_key(settings.AUDITSVC_DATA_KEY, settings.AUDITSVC_ENV, settings.SECRET_KEY)


@functools.lru_cache(maxsize=4)
def _master_key(configured: str, environment: str, secret_key: str) -> bytes:
    if not configured:
        if environment == "production":
            raise ImproperlyConfigured("AUDITSVC_DATA_KEY is required in production (manage.py create_data_key).")
        return hashlib.sha256(f"auditsvc development data key {secret_key}".encode()).digest()
    try:
        key = base64.b64decode(configured, validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ImproperlyConfigured("AUDITSVC_DATA_KEY must be 32 bytes in base64 (manage.py create_data_key).")
    return key


def new_master_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@functools.lru_cache(maxsize=4)
def _hmac_key(master: bytes) -> bytes:
    derive = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"auditsvc sensitive fields")
    return derive.derive(master)


def hmac_key() -> bytes:
    return _hmac_key(master_key())


@functools.lru_cache(maxsize=4)
def _fingerprint_key(master: bytes) -> bytes:
    derive = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"auditsvc idempotency fingerprints")
    return derive.derive(master)


def fingerprint_key() -> bytes:
    """The key of request fingerprints and the import's derived idempotency keys: its own, so
    that no fingerprint can be passed off as a sensitive field's HMAC, nor the other way."""
    return _fingerprint_key(master_key())


def _wrap_aad(customer: str) -> bytes:
    return b"auditsvc data key\x00" + customer.encode()


def forget_cached_data_keys() -> None:
    _ciphers.clear()


def data_keys_for_writing(customers: set[str]) -> dict[str, tuple[int, AESGCM]]:
    """Each customer's live data key (made on first use, and again after an erasure), as
    (id, cipher), in two queries for the lot (three when some are new). Never cached: a key
    erased a moment ago must not encrypt anything new. UnreadableDataKeys when a live key does not
    unwrap under the master key (its row was altered, or the master key is not the one that
    wrapped it): nothing can be encrypted for that customer."""
    if not customers:
        return {}
    live = CustomerDataKey.objects.filter(erased_at__isnull=True)
    rows = list(live.filter(customer__in=customers).values_list("customer", "id", "wrapped"))
    missing = sorted(customers - {row[0] for row in rows})
    if missing:
        now = timezone.now()
        # Concurrent first uses: one row wins (the partial unique constraint), the others read it.
        CustomerDataKey.objects.bulk_create(
            [CustomerDataKey(customer=c, wrapped=_wrap(AESGCM.generate_key(256), c), created_at=now) for c in missing],
            ignore_conflicts=True,
        )
        rows += live.filter(customer__in=missing).values_list("customer", "id", "wrapped")
    keys = {}
    unreadable = set()
    for customer, key_id, wrapped in rows:
        assert wrapped is not None  # a live key holds its wrapped bytes (customer_data_key_erased_or_kept)
        cipher = _cipher_or_none(bytes(wrapped), customer)
        if cipher is None:
            unreadable.add(customer)
        else:
            keys[customer] = (key_id, cipher)
    if unreadable:
        raise UnreadableDataKeys(unreadable)
    return keys


# Wrapped key → its cipher: used only for keys the database has just returned wrapped (live), keyed by
# the wrapped bytes (unique to each key), so that a restored database's reused ids cannot mislead.
_ciphers: dict[bytes, AESGCM] = {}
_CIPHERS_MAX = 100_000


def _cipher(wrapped: bytes, customer: str) -> AESGCM:
    cipher = _ciphers.get(wrapped)
    if cipher is None:
        if len(_ciphers) >= _CIPHERS_MAX:
            _ciphers.clear()
        cipher = _ciphers[wrapped] = AESGCM(_unwrap(wrapped, customer))
    return cipher


def _cipher_or_none(wrapped: bytes, customer: str) -> AESGCM | None:
    """The key's cipher, or None when the wrapped bytes do not unwrap (AES-GCM refuses them)."""
    try:
        return _cipher(wrapped, customer)
    except (InvalidTag, ValueError):  # ValueError: too short to hold a nonce and a tag
        return None


def unwraps(wrapped: bytes, customer: str) -> bool:
    """Whether a stored wrapped key opens under the master key (verify_events asks)."""
    return _cipher_or_none(wrapped, customer) is not None


def _wrap(key: bytes, customer: str) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(master_key()).encrypt(nonce, key, _wrap_aad(customer))


def _unwrap(wrapped: bytes, customer: str) -> bytes:
    return AESGCM(master_key()).decrypt(wrapped[:12], wrapped[12:], _wrap_aad(customer))


def data_keys_for_reading(key_ids: Iterable[int]) -> dict[int, AESGCM | None]:
    """Data keys' ciphers by id (None: erased), read from the database on every call (one query
    for a page's keys): a key erased a moment ago, in any process, never decrypts again. A key
    that does not unwrap is left out, as a missing one is: its values read as unreadable, never
    an error (verify_events reports the key)."""
    wanted = set(key_ids)
    if not wanted:
        return {}
    rows = CustomerDataKey.objects.filter(id__in=wanted).values_list("id", "customer", "wrapped")
    keys: dict[int, AESGCM | None] = {}
    for key_id, customer, wrapped in rows:
        if wrapped is None:
            keys[key_id] = None
        elif (cipher := _cipher_or_none(bytes(wrapped), customer)) is not None:
            keys[key_id] = cipher
    return keys

"""Sensitive and personal payload fields: what a schema marks with "x-auditsvc" is stored
protected, and the event hash covers the protected form, never the plain value.

- sensitive: stored as "hmac-sha256:<hex>", an HMAC of the value's RFC 8785 JSON under a key
  derived from AUDITSVC_DATA_KEY (as Vault's audit devices store secrets). Not reversible; a
  filter payload.<path>=<value> still finds it, because the filter hashes the value it is given.
- personal: stored as "aes-gcm:v1:<data key id>:<base64 of nonce and ciphertext>", encrypted
  under the customer's own data key (AES-256-GCM; the customer and the path are the associated
  data, so a ciphertext cannot be moved to another customer or field). Data keys are stored
  wrapped (AES-GCM) under AUDITSVC_DATA_KEY, and decrypted on read.
- erase_customer destroys a customer's data keys: their personal fields then read as ERASED,
  while the stored bytes, the hashes and the seals are untouched, so verification still passes.

Only payloads as a sender sent them are protected; an entry already in its stored form (the
stream's, an export being imported) is stored as it is, or its hash would change.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, transaction
from django.utils import timezone

from auditsvc.errors import FieldError, InvalidInput
from customers.models import Customer
from events.ingest.validation import EventIn, ItemPaths
from events.integrity.canonical import canonical_json
from events.models import CustomerDataKey, Event, EventSchema

if TYPE_CHECKING:
    from events.schemas import Check

SENSITIVE = "sensitive"
PERSONAL = "personal"
MARKS = (SENSITIVE, PERSONAL)
HMAC_PREFIX = "hmac-sha256:"
CIPHER_PREFIX = "aes-gcm:v1:"
ERASED = "[erased]"  # how a personal value reads once its customer's data key is destroyed
UNREADABLE = "[unreadable]"  # a value that looks encrypted but is not ours (a sender's string)
ANY_ITEM = "*"  # a path step through every element of an array

Path = tuple[str, ...]


@dataclass(frozen=True)
class Marking:
    path: Path  # into the payload; ANY_ITEM steps through arrays
    kind: str  # SENSITIVE or PERSONAL


def markings_of(schema: Any, path: Path = ()) -> tuple[Marking, ...]:
    """Every property the schema marks, through `properties` and array `items`."""
    if not isinstance(schema, dict):
        return ()
    found: list[Marking] = []
    if path and schema.get("x-auditsvc") in MARKS:
        return (Marking(path, schema["x-auditsvc"]),)
    for name, subschema in (schema.get("properties") or {}).items():
        found += markings_of(subschema, (*path, name))
    if isinstance(schema.get("items"), dict):
        found += markings_of(schema["items"], (*path, ANY_ITEM))
    return tuple(found)


def stored_form(schema: Any) -> Any:
    """The schema as stored payloads meet it: every marked property accepts anything (it holds an
    HMAC or a ciphertext), the rest is as it was."""
    if not isinstance(schema, dict):
        return schema
    if schema.get("x-auditsvc") in MARKS:
        return {}
    copy = dict(schema)
    if isinstance(schema.get("properties"), dict):
        copy["properties"] = {name: stored_form(sub) for name, sub in schema["properties"].items()}
    if isinstance(schema.get("items"), dict):
        copy["items"] = stored_form(schema["items"])
    return copy


def marking_problems(schema: Any, path: str = "schema") -> list[FieldError]:
    """Unknown x-auditsvc values, and a mark on the whole payload (a mark is on a property)."""
    problems = []
    if isinstance(schema, dict):
        mark = schema.get("x-auditsvc")
        if mark is not None and (mark not in MARKS or path == "schema"):
            where = "the payload itself" if path == "schema" else path
            message = f'x-auditsvc is "sensitive" or "personal", on a property; not {mark!r} on {where}.'
            problems.append(FieldError(path, "invalid_marking", message))
        for name, subschema in (schema.get("properties") or {}).items():
            problems += marking_problems(subschema, f"{path}.properties.{name}")
        problems += marking_problems(schema.get("items"), f"{path}.items")
    return problems


# --- Keys ---------------------------------------------------------------------------------


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


def sensitive_digest(value: Any, key: bytes | None = None) -> str:
    """What a sensitive value is stored as; the same value always gives the same text. key: the
    HMAC key (hmac_key()), when the caller hashes many values."""
    digest = hmac.new(key or hmac_key(), canonical_json(value), hashlib.sha256).hexdigest()
    return HMAC_PREFIX + digest


def hmac_key() -> bytes:
    return _hmac_key(master_key())


def _wrap_aad(customer: str) -> bytes:
    return b"auditsvc data key\x00" + customer.encode()


_keys: dict[int, tuple[float, AESGCM | None]] = {}  # data key id → (when read, its cipher or None: erased)
_keys_lock = threading.Lock()


def forget_cached_data_keys() -> None:
    with _keys_lock:
        _keys.clear()
    _ciphers.clear()


def _data_keys_for_writing(customers: set[str]) -> dict[str, tuple[int, AESGCM]]:
    """Each customer's live data key (made on first use, and again after an erasure), as
    (id, cipher), in two queries for the lot (three when some are new). Never cached: a key
    erased a moment ago must not encrypt anything new."""
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
    for customer, key_id, wrapped in rows:
        assert wrapped is not None  # a live key holds its wrapped bytes (customer_data_key_erased_or_kept)
        keys[customer] = (key_id, _writing_cipher(bytes(wrapped), customer))
    return keys


# Wrapped key → its cipher: used only for keys the database has just called live, and keyed by
# the wrapped bytes (unique to each key), so that a restored database's reused ids cannot mislead.
_ciphers: dict[bytes, AESGCM] = {}
_CIPHERS_MAX = 100_000


def _writing_cipher(wrapped: bytes, customer: str) -> AESGCM:
    cipher = _ciphers.get(wrapped)
    if cipher is None:
        if len(_ciphers) >= _CIPHERS_MAX:
            _ciphers.clear()
        cipher = _ciphers[wrapped] = AESGCM(_unwrap(wrapped, customer))
    return cipher


def _wrap(key: bytes, customer: str) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(master_key()).encrypt(nonce, key, _wrap_aad(customer))


def _unwrap(wrapped: bytes, customer: str) -> bytes:
    return AESGCM(master_key()).decrypt(wrapped[:12], wrapped[12:], _wrap_aad(customer))


def _data_keys_for_reading(key_ids: Iterable[int]) -> dict[int, AESGCM | None]:
    """Data keys' ciphers by id (None: erased), cached for AUDITSVC_SCHEMA_CACHE_SECONDS like the
    schemas: an erasure is seen by every process within that time."""
    now = time.monotonic()
    wanted = set(key_ids)
    found = {
        key_id: cached[1]
        for key_id in wanted
        if (cached := _keys.get(key_id)) and now - cached[0] < settings.AUDITSVC_SCHEMA_CACHE_SECONDS
    }
    missing = wanted - found.keys()
    if missing:
        rows = CustomerDataKey.objects.filter(id__in=missing).values_list("id", "customer", "wrapped")
        with _keys_lock:
            for key_id, customer, wrapped in rows:
                cipher = AESGCM(_unwrap(bytes(wrapped), customer)) if wrapped is not None else None
                _keys[key_id] = (now, cipher)
                found[key_id] = cipher
    return found


# --- Protecting on ingest -----------------------------------------------------------------


def protect_items(items: Sequence[EventIn], checks: Sequence[Check], paths: ItemPaths) -> list[EventIn]:
    """The items as they are to be stored and hashed: marked fields protected, by the markings of
    the version each was checked against (schemas.check_items). InvalidInput (nothing stored)
    when a personal value has no customer whose key could encrypt it."""
    marked = [(i, item, check.markings) for i, (item, check) in enumerate(zip(items, checks, strict=True))
              if check.markings and not item.in_stored_form]  # fmt: skip
    errors: list[FieldError] = []
    customers: set[str] = set()
    message = "Personal fields are encrypted under their customer's key: this event needs a customer."
    for index, item, markings in marked:
        personal = [m.path for m in markings if m.kind == PERSONAL and _has(item.payload, m.path)]
        if personal and item.customer is None:
            errors += [
                FieldError(paths(index, f"payload.{_dotted(p)}"), "customer_required", message) for p in personal
            ]
        elif personal and item.customer is not None:
            customers.add(item.customer)
    if errors:
        raise InvalidInput(errors)
    keys = _data_keys_for_writing(customers)
    protected = list(items)
    for index, item, markings in marked:
        data_key = keys.get(item.customer) if item.customer else None
        protected[index] = replace(item, payload=protect(item.payload, markings, item.customer, data_key))
    return protected


def protect(
    payload: dict[str, Any], markings: Sequence[Marking], customer: str | None, data_key: tuple[int, AESGCM] | None
) -> dict[str, Any]:
    """The payload as stored: marked values replaced (the sender's dict is not changed).
    Personal values are encrypted under data_key, the customer's (id, cipher)."""
    protected = payload
    encrypt = functools.partial(_encrypt, *data_key, customer) if data_key and customer is not None else None
    key = hmac_key()
    for marking in markings:
        if marking.kind == SENSITIVE:
            protected = _replaced(protected, marking.path, (), lambda value, _path: sensitive_digest(value, key))
        elif encrypt is not None:
            protected = _replaced(protected, marking.path, (), encrypt)
    return dict(protected)


def _encrypt(key_id: int, cipher: AESGCM, customer: str, value: Any, path: Path) -> str:
    nonce = os.urandom(12)
    sealed = cipher.encrypt(nonce, canonical_json(value), _value_aad(customer, path))
    return f"{CIPHER_PREFIX}{key_id}:{base64.b64encode(nonce + sealed).decode()}"


def _value_aad(customer: str, path: Path) -> bytes:
    return "\x00".join(("auditsvc personal", customer, *path)).encode()


def _has(payload: Any, path: Path) -> bool:
    if not path:
        return True
    head, rest = path[0], path[1:]
    if head == ANY_ITEM:
        return isinstance(payload, list) and any(_has(item, rest) for item in payload)
    return isinstance(payload, dict) and head in payload and _has(payload[head], rest)


def _replaced(value: Any, path: Path, done: Path, change: Any) -> Any:
    """value with what lies at path (at every element, through ANY_ITEM) replaced by change(it,
    its path); the containers on the way are copies, the rest is shared. null stays null."""
    if not path:
        return value if value is None else change(value, done)
    head, rest = path[0], path[1:]
    if head == ANY_ITEM:
        if not isinstance(value, list):
            return value
        return [_replaced(item, rest, (*done, str(index)), change) for index, item in enumerate(value)]
    if not isinstance(value, dict) or head not in value:
        return value
    copy = dict(value)
    copy[head] = _replaced(value[head], rest, (*done, head), change)
    return copy


def _dotted(path: Path) -> str:
    return ".".join("[]" if part == ANY_ITEM else part for part in path).replace(".[]", "[]")


# --- Reading ------------------------------------------------------------------------------


def readable_payloads(payloads: Sequence[tuple[dict[str, Any], str | None]]) -> list[dict[str, Any]]:
    """(payload as stored, its customer) → payloads with personal values decrypted (ERASED where
    the key is destroyed); the others are returned as they are. One key lookup for them all."""
    key_ids = [_key_ids(payload) for payload, _ in payloads]
    if not any(key_ids):
        return [payload for payload, _ in payloads]
    keys = _data_keys_for_reading(set().union(*key_ids))
    return [
        _decrypted(payload, keys, customer or "", ()) if ids else payload
        for (payload, customer), ids in zip(payloads, key_ids, strict=True)
    ]


def readable_outputs(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events as the API renders them, with their payloads readable (see readable_payloads)."""
    payloads = readable_payloads([(output["payload"], output["customer"]) for output in outputs])
    return [
        output if payload is output["payload"] else {**output, "payload": payload}
        for output, payload in zip(outputs, payloads, strict=True)
    ]


# A ciphertext's start in JSON text: the key id follows. orjson writes a payload far faster than
# Python could walk it, so most payloads (which hold none) cost one serialisation and one search.
_CIPHERTEXT_IN_JSON = re.compile(rb'"' + re.escape(CIPHER_PREFIX.encode()) + rb"([0-9]+):")


def _key_ids(payload: dict[str, Any]) -> set[int]:
    """The data key ids of the ciphertexts in payload (a key that merely looks like one adds a
    lookup that finds nothing, and _decrypted ignores keys)."""
    return {int(key_id) for key_id in _CIPHERTEXT_IN_JSON.findall(orjson.dumps(payload))}


def _decrypted(value: Any, keys: dict[int, AESGCM | None], customer: str, path: Path) -> Any:  # noqa: PLR0911
    if isinstance(value, dict):
        return {k: _decrypted(v, keys, customer, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_decrypted(v, keys, customer, (*path, str(i))) for i, v in enumerate(value)]
    if not (isinstance(value, str) and value.startswith(CIPHER_PREFIX)):
        return value
    key_id, _, sealed = value[len(CIPHER_PREFIX) :].partition(":")
    if not key_id.isdigit() or int(key_id) not in keys:
        return UNREADABLE
    cipher = keys[int(key_id)]
    if cipher is None:
        return ERASED
    try:
        raw = base64.b64decode(sealed, validate=True)
        plain = cipher.decrypt(raw[:12], raw[12:], _value_aad(customer, path))
    except (ValueError, InvalidTag):
        return UNREADABLE
    return orjson.loads(plain)


# --- The access log's records --------------------------------------------------------------

_protected_paths: tuple[float, frozenset[Path]] | None = None


def protected_paths() -> frozenset[Path] | None:
    """The paths a type's latest schema marks (any type's), cached like the schemas; None when
    the database cannot say (then every payload filter counts as protected)."""
    global _protected_paths  # noqa: PLW0603 - a process-wide cache, like the others here
    now = time.monotonic()
    if _protected_paths is not None and now - _protected_paths[0] < settings.AUDITSVC_SCHEMA_CACHE_SECONDS:
        return _protected_paths[1]
    try:
        latest = EventSchema.objects.order_by("type_id", "-version").distinct("type_id").values_list("schema")
        paths = frozenset(marking.path for (schema,) in latest for marking in markings_of(schema))
    except DatabaseError:
        return None
    _protected_paths = (now, paths)
    return paths


def forget_protected_paths() -> None:
    global _protected_paths  # noqa: PLW0603
    _protected_paths = None


def redacted_filters(filters: dict[str, Any]) -> dict[str, Any]:
    """Query filters as a read record keeps them: payload.<path>=<value> on a marked path, and a
    payload={...} filter that names one, with each value replaced by its HMAC."""
    if not any(key == "payload" or key.startswith("payload.") for key in filters):
        return filters
    paths = protected_paths()
    redacted = dict(filters)
    for key, value in filters.items():
        if key.startswith("payload.") and (paths is None or tuple(key.split(".")[1:]) in paths):
            redacted[key] = [sensitive_digest(v) for v in value] if isinstance(value, list) else sensitive_digest(value)
        elif key == "payload" and _names_any(value, paths):
            redacted[key] = sensitive_digest(value)  # JSON containment naming a marked field: all of it
    return redacted


def _names_any(value: Any, paths: frozenset[Path] | None) -> bool:
    try:
        document = orjson.loads(value) if isinstance(value, str) else None
    except orjson.JSONDecodeError:
        return False  # refused as a filter: nothing was sought
    return paths is None or any(_has(document, path) for path in paths)


# --- Erasure ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Erasure:
    customer: str
    keys_destroyed: int
    events: int


def erase_customer(customer: str, *, actor: str) -> Erasure:
    """Destroy the customer's data keys and blank its stored contact fields, and record that as
    an auditsvc.customer.erased event, in one transaction."""
    from events.access_log import store_service_event  # noqa: PLC0415 - it imports the write path

    with transaction.atomic():
        live = CustomerDataKey.objects.filter(customer=customer, erased_at__isnull=True)
        destroyed = live.update(wrapped=None, erased_at=timezone.now())
        Customer.objects.filter(external_id=customer).update(email="", display_name="")
        events = Event.objects.filter(customer__external_id=customer).count()
        store_service_event(
            type="auditsvc.customer.erased",
            actor=actor,
            customer=customer,
            description=f"{actor} erased the personal data of customer {customer}",
            payload={"data_keys_destroyed": destroyed, "events": events},
        )
    forget_cached_data_keys()
    return Erasure(customer=customer, keys_destroyed=destroyed, events=events)

"""Sensitive and personal payload fields: what a schema marks with "x-auditsvc" is stored
protected, and the event hash covers the protected form, never the plain value. The one rule
for protecting a payload on the way in and revealing it on the way out.

- sensitive: stored as "hmac-sha256:<hex>", an HMAC of the value's RFC 8785 JSON under a key
  derived from AUDITSVC_DATA_KEY (as Vault's audit devices store secrets). Not reversible; a
  filter payload.<path>=<value> still finds it, because the filter hashes the value it is given.
- personal: stored as "aes-gcm:v1:<data key id>:<base64 of nonce and ciphertext>", encrypted
  under the customer's own data key (events.data_keys; AES-256-GCM, the customer and the path
  are the associated data, so a ciphertext cannot be moved to another customer or field).
- erase_customer (events.erasure) destroys a customer's data keys: their personal fields then
  read as ERASED, while the stored bytes, the hashes and the seals are untouched.

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
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.db import DatabaseError

from auditsvc.errors import FieldError, InvalidInput
from events.data_keys import data_keys_for_reading, data_keys_for_writing, hmac_key
from events.ingest.validation import EventIn, ItemPaths
from events.integrity.canonical import canonical_json
from events.models import EventSchema
from events.privacy_generation import read_generation
from events.schema_marks import ANY_ITEM, PERSONAL, SENSITIVE, Marking, Path, dotted, has_path, markings_of

if TYPE_CHECKING:
    from events.schemas import Check

HMAC_PREFIX = "hmac-sha256:"
CIPHER_PREFIX = "aes-gcm:v1:"
ERASED = "[erased]"  # how a personal value reads once its customer's data key is destroyed
UNREADABLE = "[unreadable]"  # a value that looks encrypted but is not ours (a sender's string)


def sensitive_digest(value: Any, key: bytes | None = None) -> str:
    """What a sensitive value is stored as; the same value always gives the same text. key: the
    HMAC key (hmac_key()), when the caller hashes many values."""
    digest = hmac.new(key or hmac_key(), canonical_json(value), hashlib.sha256).hexdigest()
    return HMAC_PREFIX + digest


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
        personal = [m.path for m in markings if m.kind == PERSONAL and has_path(item.payload, m.path)]
        if personal and item.customer is None:
            errors += [FieldError(paths(index, f"payload.{dotted(p)}"), "customer_required", message) for p in personal]
        elif personal and item.customer is not None:
            customers.add(item.customer)
    if errors:
        raise InvalidInput(errors)
    keys = data_keys_for_writing(customers)
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


# --- Reading ------------------------------------------------------------------------------


def readable_payloads(payloads: Sequence[tuple[dict[str, Any], str | None]]) -> list[dict[str, Any]]:
    """(payload as stored, its customer) → payloads with personal values decrypted (ERASED where
    the key is destroyed); the others are returned as they are. One key lookup for them all."""
    key_ids = [_key_ids(payload) for payload, _ in payloads]
    if not any(key_ids):
        return [payload for payload, _ in payloads]
    keys = data_keys_for_reading(set().union(*key_ids))
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

_protected_paths: tuple[int, frozenset[Path]] | None = None  # (privacy generation, the paths)


def protected_paths() -> frozenset[Path] | None:
    """The paths a type's latest schema marks (any type's), cached for one privacy generation;
    None when the database cannot say (then every payload filter counts as protected)."""
    global _protected_paths  # noqa: PLW0603 - a process-wide cache, like the others here
    try:
        generation = read_generation()  # one small query, only for reads that filter payloads
        cached = _protected_paths
        if cached is not None and cached[0] == generation:
            return cached[1]
        latest = EventSchema.objects.order_by("type_id", "-version").distinct("type_id").values_list("schema")
        paths = frozenset(marking.path for (schema,) in latest for marking in markings_of(schema))
    except DatabaseError:
        return None
    _protected_paths = (generation, paths)
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
    return paths is None or any(has_path(document, path) for path in paths)

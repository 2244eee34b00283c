"""Sensitive and personal payload fields: what a schema marks with "x-auditsvc" is stored
protected, and the event hash covers the protected form, never the plain value. The one rule
for protecting a payload on the way in and revealing it on the way out.

- sensitive: stored as "hmac-sha256:<hex>", an HMAC of the value's RFC 8785 JSON under a key
  derived from AUDITSVC_DATA_KEY (as Vault's audit devices store secrets). Not reversible; a
  filter payload.<path>=<value> still finds it, because the filter hashes the value it is given.
- personal: stored as "aes-gcm:v2:<data key id>:<base64 of nonce and ciphertext>", encrypted
  under the customer's own data key (events.data_keys; AES-256-GCM). The associated data is the
  event's id, source and type, the customer and the path, so a ciphertext copied into another
  event, field or customer does not decrypt. (v1, of before, was bound to customer and path only:
  still read, at marked paths only, and never written.)
- A read decrypts only at the paths the event's type marks (marked_paths); a sender's string that
  merely looks protected is refused on the way in (refuse_protected_prefixes).
- erase_customer (events.erasure) destroys a customer's data keys: their personal fields then
  read as ERASED, while the stored bytes, the hashes and the seals are untouched.

Only payloads as a sender sent them are protected; an entry already in its stored form (a
stream entry the API accepted, an export proven by its hash) is stored as it is, or its hash
would change.
"""

from __future__ import annotations

import base64
import functools
import hmac
import os
import re
import threading
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.db import DatabaseError

from auditsvc.errors import FieldError, InvalidInput, ProblemError
from events.data_keys import (
    UnreadableDataKeys,
    data_keys_for_reading,
    data_keys_for_writing,
    fingerprint_key,
    hmac_key,
)
from events.ingest.validation import EventIn, ItemPaths, keyed_fingerprint
from events.integrity.canonical import big_ints_as_floats, canonical_json
from events.models import EventSchema
from events.privacy_generation import read_generation
from events.schema_marks import (
    ANY_ITEM,
    PERSONAL,
    SENSITIVE,
    SERVICE_MARKINGS,
    Marking,
    Path,
    dotted,
    has_path,
    markings_of,
)

if TYPE_CHECKING:
    from events.schemas import Check

HMAC_PREFIX = "hmac-sha256:"
CIPHER_PREFIX = "aes-gcm:"  # of every version
CIPHER_V1 = "aes-gcm:v1:"  # bound to customer and path only: read (at marked paths), never written
CIPHER_V2 = "aes-gcm:v2:"  # bound to the event too: id, source, type, customer, path
PROTECTED_PREFIXES = (CIPHER_PREFIX, HMAC_PREFIX)
ERASED = "[erased]"  # how a personal value reads once its customer's data key is destroyed
UNREADABLE = "[unreadable]"  # a value at a marked path that looks encrypted but not for this place
DATA_KEY_UNREADABLE = "data_key_unreadable"
_UNREADABLE_KEY = (
    "The data key of customer {} does not unwrap under AUDITSVC_DATA_KEY, so its personal fields can be"
    " neither encrypted nor stored; nothing was stored (manage.py verify_events reports the key)."
)


@dataclass(frozen=True, slots=True)
class Place:
    """Where a personal value is stored, all of which its (v2) ciphertext is bound to."""

    event_id: str
    source: str
    type: str
    customer: str


def sensitive_digest(value: Any, key: bytes | None = None) -> str:
    """What a sensitive value is stored as; the same value always gives the same text. key: the
    HMAC key (hmac_key()), when the caller hashes many values."""
    return HMAC_PREFIX + hmac.digest(key or hmac_key(), canonical_json(value), "sha256").hex()


def protect_items(
    items: Sequence[EventIn],
    checks: Sequence[Check],
    paths: ItemPaths,
    *,
    source: str,
    event_ids: Sequence[uuid.UUID],
) -> list[EventIn]:
    """The items as they are to be stored and hashed: marked fields protected, by the markings of
    the version each was checked against (schemas.check_items), each ciphertext bound to its
    event (event_ids[i], of source). InvalidInput (nothing stored) when a personal value has no
    customer whose key could encrypt it; a 503 data_key_unreadable, per item, when its customer's
    live key does not unwrap (never stored plain; not worth retrying before an operator looks)."""
    marked = [(i, item, check.markings) for i, (item, check) in enumerate(zip(items, checks, strict=True))
              if check.markings and not item.stored_as_is]  # fmt: skip
    errors: list[FieldError] = []
    customers: dict[int, str] = {}  # item index → the customer whose key encrypts it
    message = "Personal fields are encrypted under their customer's key: this event needs a customer."
    for index, item, markings in marked:
        personal = [m.path for m in markings if m.kind == PERSONAL and has_path(item.payload, m.path)]
        if personal and item.customer is None:
            errors += [FieldError(paths(index, f"payload.{dotted(p)}"), "customer_required", message) for p in personal]
        elif personal and item.customer is not None:
            customers[index] = item.customer
    if errors:
        raise InvalidInput(errors)
    try:
        keys = data_keys_for_writing(set(customers.values()))
    except UnreadableDataKeys as exc:
        raise ProblemError(
            [
                FieldError(paths(index, "customer"), DATA_KEY_UNREADABLE, _UNREADABLE_KEY.format(customer))
                for index, customer in customers.items()
                if customer in exc.customers
            ],
            status=503,
        ) from None
    protected = list(items)
    mac_key, fingerprints_key = hmac_key(), fingerprint_key()  # once: each reads the settings
    for index, item, markings in marked:
        data_key = keys.get(item.customer) if item.customer else None
        place = Place(str(event_ids[index]), source, item.type, item.customer) if item.customer is not None else None
        hashed = _hashed(item.payload, markings, mac_key)  # once: the stored and the fingerprint's form share it
        payload = protect(hashed, markings, place, data_key)
        if any(has_path(item.payload, m.path) for m in markings):  # fingerprint what is protected
            stand_ins = fingerprint_form(hashed, markings, item.customer, data_key, mac_key)
            fingerprint = protected_fingerprint(item, stand_ins, fingerprints_key)
            protected[index] = replace(item, payload=payload, fingerprint=fingerprint)
        else:
            protected[index] = replace(item, payload=payload)
    return protected


def fingerprint_form(
    hashed: dict[str, Any],
    markings: Sequence[Marking],
    customer: str | None,
    data_key: tuple[int, AESGCM] | None,
    mac_key: bytes,
) -> dict[str, Any]:
    """The payload as its fingerprint sees it, from its sensitive values hashed (_hashed):
    protected, but the same every time it is sent. Personal values as a MAC under the customer's
    own data key (_personal_tag), not its random-nonce ciphertext: once the key is erased, no one,
    holding the master key or not, can test a guess against a fingerprint or derived key."""
    tag = (
        functools.partial(_personal_tag, data_key[1], mac_key, customer) if data_key and customer is not None else None
    )
    return _with_personal(hashed, markings, tag)


def _personal_tag(cipher: AESGCM, mac_key: bytes, customer: str, value: Any, path: Path) -> str:
    """A deterministic MAC of a personal value under its customer's data key: the AES-GCM tag
    (GMAC) of the value as associated data, under a nonce derived from it (as SIV does), so that
    equal values give equal tags and distinct values never share a nonce."""
    data = _aad_v1(customer, path) + b"\x00" + canonical_json(value)
    nonce = hmac.digest(mac_key, b"auditsvc fingerprint nonce\x00" + data, "sha256")[:12]  # one-shot: fast
    return "gmac:" + base64.b64encode(cipher.encrypt(nonce, b"", b"auditsvc fingerprint\x00" + data)).decode()


def protected_fingerprint(item: EventIn, payload: dict[str, Any], key: bytes | None = None) -> str:
    """The fingerprint of an item whose payload is given in its protected, stable form."""
    content = {
        "type": item.type,
        "customer": item.customer,
        "customer_identities": item.customer_identities,
        "actor": item.actor,
        "occurred_at": item.occurred_at,
        "description": item.description,
        "payload": payload,
        "origin": item.origin,
    }
    return keyed_fingerprint(orjson.dumps(content, option=orjson.OPT_SORT_KEYS), key)


def protect(
    hashed: dict[str, Any], markings: Sequence[Marking], place: Place | None, data_key: tuple[int, AESGCM] | None
) -> dict[str, Any]:
    """The payload as stored, from its sensitive values hashed (_hashed): personal values
    encrypted under data_key, the customer's (id, cipher), for place."""
    encrypt = functools.partial(_encrypt, *data_key, place) if data_key and place is not None else None
    return _with_personal(hashed, markings, encrypt)


def _hashed(payload: dict[str, Any], markings: Sequence[Marking], mac_key: bytes) -> dict[str, Any]:
    """payload with its sensitive values replaced by their HMACs (the sender's dict is not changed).
    First, for every marking: a sensitive child of a personal parent is hashed before the parent
    is encrypted (schema_marks.strongest drops any mark under one at least as strong)."""
    hashed = payload
    for marking in markings:
        if marking.kind == SENSITIVE:
            hashed = _replaced(hashed, marking.path, (), lambda value, _path: sensitive_digest(value, mac_key))
    return dict(hashed)


def _with_personal(payload: dict[str, Any], markings: Sequence[Marking], change: Any) -> dict[str, Any]:
    """payload with its personal values replaced by change(value, path); left as they are when
    change is None (no customer key to use)."""
    changed = payload
    for marking in markings:
        if marking.kind == PERSONAL and change is not None:
            changed = _replaced(changed, marking.path, (), change)
    return dict(changed)


def _encrypt(key_id: int, cipher: AESGCM, place: Place, value: Any, path: Path) -> str:
    nonce = os.urandom(12)
    sealed = cipher.encrypt(nonce, canonical_json(value), _aad_v2(place, path))
    return f"{CIPHER_V2}{key_id}:{base64.b64encode(nonce + sealed).decode()}"


def _aad_v1(customer: str, path: Path) -> bytes:
    return "\x00".join(("auditsvc personal", customer, *path)).encode()


def _aad_v2(place: Place, path: Path) -> bytes:
    # NUL separates the parts: no id, slug, type name, customer or payload key holds one.
    parts = ("auditsvc personal v2", place.event_id, place.source, place.type, place.customer, *path)
    return "\x00".join(parts).encode()


def _replaced(value: Any, path: Path, done: Path, change: Any) -> Any:
    """value with what lies at path (at every element, through ANY_ITEM) replaced by change(it,
    its path); the containers on the way are copies, the rest is shared. null stays null. A value
    on the way that is not the container the path goes through (a string where an object was
    marked into) is replaced whole: whatever shape it has, it may hold the marked value."""
    if value is None:
        return None
    head = path[0] if path else None
    if head is None or not isinstance(value, list if head == ANY_ITEM else dict):
        return change(value, done)  # the marked value, or not the container its path goes through
    rest = path[1:]
    if head == ANY_ITEM:
        return [_replaced(item, rest, (*done, str(index)), change) for index, item in enumerate(value)]
    if head not in value:
        return value
    copy = dict(value)
    copy[head] = _replaced(value[head], rest, (*done, head), change)
    return copy


# --- Reading ------------------------------------------------------------------------------


def readable_payloads(payloads: Sequence[tuple[dict[str, Any], Place]]) -> list[dict[str, Any]]:
    """(payload as stored, its place) → payloads with personal values decrypted (ERASED where the
    key is destroyed) at the paths their type marks; anything else is returned as stored, and a
    payload with nothing to decrypt is returned itself. One key lookup for them all."""
    key_ids = [_key_ids(_json_text(payload)) for payload, _ in payloads]
    return _readable([payload for payload, _ in payloads], key_ids, lambda i: payloads[i][1])


def _readable(
    payloads: Sequence[dict[str, Any]], key_ids: Sequence[set[int]], place_of: Callable[[int], Place]
) -> list[dict[str, Any]]:
    """readable_payloads, given each payload's key ids; place_of(i) is asked only of those with some."""
    if not any(key_ids):
        return list(payloads)
    places = {i: place_of(i) for i, ids in enumerate(key_ids) if ids}
    marks = marked_paths({place.type for place in places.values()})
    keys = data_keys_for_reading(set().union(*key_ids))
    readable = []
    for i, payload in enumerate(payloads):
        place = places.get(i)
        paths = marks.get(place.type, frozenset()) if place is not None else frozenset()
        if place is None or not paths:
            readable.append(payload)
            continue
        readable.append(_decrypted(payload, _Reading(keys, place, paths, _prefixes(paths)), (), ()))
    return readable


def readable_outputs(
    outputs: list[dict[str, Any]], *, payload_texts: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Events as the API renders them, with their payloads readable (see readable_payloads).
    payload_texts: each payload's JSON text as the database gave it, searched for ciphertexts
    instead of serialising every payload again (most hold none)."""
    texts = [_json_text(o["payload"]) for o in outputs] if payload_texts is None else payload_texts
    payloads = _readable(
        [output["payload"] for output in outputs],
        [_key_ids(text) for text in texts],
        lambda i: Place(outputs[i]["id"], outputs[i]["source"], outputs[i]["type"], outputs[i]["customer"] or ""),
    )
    return [
        output if payload is output["payload"] else {**output, "payload": payload}
        for output, payload in zip(outputs, payloads, strict=True)
    ]


_marks: dict[str, tuple[int, frozenset[Path]]] = {}  # type name → (privacy generation, the paths it marks)
_marks_lock = threading.Lock()


def marked_paths(type_names: Collection[str], *, generation: int | None = None) -> dict[str, frozenset[Path]]:
    """The paths each type marks, the one rule of where a read decrypts and what an export must
    hold protected: every version's marks (the write side protects by the strongest mark any
    version gave, and an event stored with validation off records no version), and the built-in
    marks of the log's own types. Cached for one privacy generation (generation: the caller's;
    None: read now)."""
    if generation is None:
        generation = read_generation()
    found = {
        name: cached[1] for name in type_names if (cached := _marks.get(name)) is not None and cached[0] == generation
    }
    missing = set(type_names) - found.keys()
    if missing:
        read: dict[str, set[Path]] = {name: {m.path for m in SERVICE_MARKINGS.get(name, ())} for name in missing}
        for name, schema in EventSchema.objects.filter(type__name__in=missing).values_list("type__name", "schema"):
            read[name].update(marking.path for marking in markings_of(schema))
        with _marks_lock:
            for name, paths in read.items():
                found[name] = frozenset(paths)
                _marks[name] = (generation, found[name])
    return found


def in_stored_form(payload: dict[str, Any], type_name: str, *, generation: int | None) -> bool:
    """Whether every value at a path the type marks (as of generation) is protected (or null), as
    this log stores it: part of what proves an imported record to be an export of stored events."""
    return all(_protected_at(payload, path) for path in marked_paths({type_name}, generation=generation)[type_name])


def _protected_at(value: Any, path: Path) -> bool:
    if value is None or (isinstance(value, str) and value.startswith(PROTECTED_PREFIXES)):
        return True  # null, or protected here or higher up (a value of the wrong shape is protected whole)
    if not path:
        return False
    head, rest = path[0], path[1:]
    if head == ANY_ITEM:
        return isinstance(value, list) and all(_protected_at(item, rest) for item in value)
    return isinstance(value, dict) and (head not in value or _protected_at(value[head], rest))


def _prefixes(marks: frozenset[Path]) -> frozenset[Path]:
    """Every path on the way to a mark (the mark included): where _decrypted needs to look."""
    return frozenset(mark[:n] for mark in marks for n in range(1, len(mark) + 1))


# A ciphertext's start in JSON text: the key id follows. orjson writes a payload far faster than
# Python could walk it, so most payloads (which hold none) cost one serialisation and one search;
# none at all when the database's text of it is at hand (jsonb writes these strings unescaped).
_CIPHERTEXT = re.escape(CIPHER_PREFIX) + "v[12]:([0-9]+):"
_CIPHERTEXT_IN_JSON = re.compile(('"' + _CIPHERTEXT).encode())
_CIPHERTEXT_IN_TEXT = re.compile('"' + _CIPHERTEXT)


def _json_text(payload: dict[str, Any]) -> bytes:
    """payload's JSON text to search; a number jsonb holds beyond 64 bits (stored before ingest
    refused them) is written as the float it was, as the renderer does, instead of raising."""
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError:
        return orjson.dumps(big_ints_as_floats(payload))


def _key_ids(text: bytes | str) -> set[int]:
    """The data key ids of the ciphertexts in a payload's JSON text (a key that merely looks like
    one adds a lookup that finds nothing, and _decrypted ignores keys)."""
    found = _CIPHERTEXT_IN_TEXT.findall(text) if isinstance(text, str) else _CIPHERTEXT_IN_JSON.findall(text)
    return {int(key_id) for key_id in found}


@dataclass(frozen=True, slots=True)
class _Reading:
    """What one payload's walk needs: the keys, the event's place, and where its type marks."""

    keys: dict[int, AESGCM | None]
    place: Place
    marks: frozenset[Path]
    prefixes: frozenset[Path]  # every path on the way to a mark: where the walk looks


def _decrypted(value: Any, reading: _Reading, path: Path, pattern: Path) -> Any:
    """value with the ciphertexts at marked paths opened; pattern is path as marks spell it
    (ANY_ITEM for an array's index). Returns value itself where nothing changed."""
    if isinstance(value, str) and (
        pattern in reading.marks or (pattern in reading.prefixes and value.startswith(CIPHER_PREFIX))
    ):  # on the way to a mark: a value of the wrong shape there was protected whole (_replaced)
        return _opened(value, reading.keys, reading.place, path)
    if isinstance(value, dict):
        changed = {k: _decrypted(v, reading, (*path, k), (*pattern, k))
                   for k, v in value.items() if (*pattern, k) in reading.prefixes}  # fmt: skip
        if all(changed[k] is value[k] for k in changed):
            return value
        return {**value, **changed}
    if isinstance(value, list) and (*pattern, ANY_ITEM) in reading.prefixes:
        items = [_decrypted(v, reading, (*path, str(i)), (*pattern, ANY_ITEM)) for i, v in enumerate(value)]
        return value if all(new is old for new, old in zip(items, value, strict=True)) else items
    return value


def _opened(value: str, keys: dict[int, AESGCM | None], place: Place, path: Path) -> Any:
    if value.startswith(CIPHER_V2):
        sealed, aad = value[len(CIPHER_V2) :], _aad_v2(place, path)
    elif value.startswith(CIPHER_V1):
        sealed, aad = value[len(CIPHER_V1) :], _aad_v1(place.customer, path)
    elif value.startswith(CIPHER_PREFIX):
        return UNREADABLE  # a version this log never wrote
    else:
        return value  # plain (stored before the mark) or an HMAC
    key_id, _, sealed = sealed.partition(":")
    if not key_id.isdigit() or int(key_id) not in keys:
        return UNREADABLE
    cipher = keys[int(key_id)]
    if cipher is None:
        return ERASED
    try:
        raw = base64.b64decode(sealed, validate=True)
        plain = cipher.decrypt(raw[:12], raw[12:], aad)
    except (ValueError, InvalidTag):
        return UNREADABLE
    return orjson.loads(plain)


# --- Refusing look-alikes -----------------------------------------------------------------

_PROTECTED_IN_JSON = re.compile(rb'"(?:' + b"|".join(re.escape(p.encode()) for p in PROTECTED_PREFIXES) + rb")")
LOOKS_PROTECTED = (
    f"A string beginning {CIPHER_PREFIX} or {HMAC_PREFIX} is a value this log protected; "
    "a sender cannot send one (it would pass for an encrypted or hashed field)."
)


def refuse_protected_prefixes(items: Sequence[EventIn], paths: ItemPaths) -> None:
    """400 protected_value_prefix, a field error per string, for items whose payload holds a
    string that begins as the log's protected values do: a ciphertext copied from another event
    (exports, archives and proofs carry them) must not come back as this sender's. Items already
    in their stored form (a stream entry, a proven export) are as the log wrote them."""
    errors = []
    for index, item in enumerate(items):
        if not item.stored_as_is and _PROTECTED_IN_JSON.search(orjson.dumps(item.payload)):
            errors += [
                FieldError(paths(index, where), "protected_value_prefix", LOOKS_PROTECTED)
                for where in _prefixed(item.payload, "payload")
            ]
    if errors:
        raise InvalidInput(errors)


def _prefixed(value: Any, where: str) -> list[str]:
    """The field names ("payload.user.email", "payload.items[2]") of strings that look protected."""
    if isinstance(value, str):
        return [where] if value.startswith(PROTECTED_PREFIXES) else []
    if isinstance(value, dict):
        return [found for k, v in value.items() for found in _prefixed(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [found for i, v in enumerate(value) for found in _prefixed(v, f"{where}[{i}]")]
    return []


# --- The access log's records --------------------------------------------------------------

_protected_paths: tuple[int, frozenset[Path]] | None = None  # (privacy generation, the paths)


def protected_paths() -> frozenset[Path] | None:
    """The paths any version of any type's schema marks (schema_marks.strongest), cached for one
    privacy generation; None when the database cannot say (then every payload filter counts as
    protected)."""
    global _protected_paths  # noqa: PLW0603 - a process-wide cache, like the others here
    try:
        generation = read_generation()  # one small query, only for reads that filter payloads
        cached = _protected_paths
        if cached is not None and cached[0] == generation:
            return cached[1]
        every = EventSchema.objects.values_list("schema")  # a mark any version gave counts
        paths = frozenset(marking.path for (schema,) in every for marking in markings_of(schema))
        paths |= {marking.path for marks in SERVICE_MARKINGS.values() for marking in marks}  # the log's own
    except DatabaseError:
        return None
    _protected_paths = (generation, paths)
    return paths


def forget_protected_paths() -> None:
    global _protected_paths  # noqa: PLW0603
    _protected_paths = None
    with _marks_lock:
        _marks.clear()


def redacted_filters(filters: dict[str, Any], *, personal: Collection[str] = ()) -> dict[str, Any]:
    """Query filters as a read record keeps them: payload.<path>=<value> on a marked path, and a
    payload={...} filter that names one, with each value replaced by its HMAC; so are the
    parameters named in personal (a customer search by e-mail), in lower case, as e-mail
    matches ignore case: who searched for an address is found by the HMAC of it."""
    redacted = dict(filters)
    for key in personal:
        if key in filters:
            value = filters[key]
            terms = value if isinstance(value, list) else [value]
            digests = [sensitive_digest(str(term).strip().lower()) for term in terms]
            redacted[key] = digests if isinstance(value, list) else digests[0]
    if not any(key == "payload" or key.startswith("payload.") for key in filters):
        return redacted
    paths = protected_paths()
    for key, value in filters.items():
        if key.startswith("payload.") and (paths is None or _touches_mark(tuple(key.split(".")[1:]), paths)):
            redacted[key] = [sensitive_digest(v) for v in value] if isinstance(value, list) else sensitive_digest(value)
        elif key == "payload" and _names_any(value, paths):
            redacted[key] = sensitive_digest(value)  # JSON containment naming a marked field: all of it
    return redacted


def _touches_mark(sought: Path, paths: frozenset[Path]) -> bool:
    """Whether a payload.<path> filter seeks a marked value: at a mark, inside a marked property,
    or above one (a filter steps through arrays without naming them: ANY_ITEM and indexes drop)."""
    sought = tuple(step for step in sought if not step.isdigit())
    for mark in paths:
        named = tuple(step for step in mark if step != ANY_ITEM)
        if sought[: len(named)] == named or named[: len(sought)] == sought:
            return True
    return False


def _names_any(value: Any, paths: frozenset[Path] | None) -> bool:
    try:
        document = orjson.loads(value) if isinstance(value, str) else None
    except orjson.JSONDecodeError:
        return False  # refused as a filter: nothing was sought
    return paths is None or any(has_path(document, path) for path in paths)

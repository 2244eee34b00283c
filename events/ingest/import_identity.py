"""Who an imported record is: its event id and receipt time, and the identity a re-run of the
file recognises it by (events.ingest.importing's rule, in one place).

Our own ids are kept (a restore of an export); another store's id (a migration) becomes the
idempotency key import-id:<that id>; a record with neither a key nor an id gets a key derived
from its content and how often that content came before it in the file.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any, NamedTuple

from auditsvc.errors import FieldError
from events.ids import uuid7_at, uuid7_time
from events.ingest.formats import RawRecord
from events.ingest.validation import IDEMPOTENCY_KEY_MAX, parse_time
from events.lifecycle.partitions import ID_TIME_SLACK

# Another store's id, kept as the event's idempotency key: its identity on a re-run, and
# readable wherever the key is (API, exports), without touching what the event hash covers.
# Not "import:", the derived keys' prefix: no foreign id can take a derived key's place.
_FOREIGN_PREFIX = "import-id:"
FOREIGN_ID_MAX = IDEMPOTENCY_KEY_MAX - len(_FOREIGN_PREFIX)


def receipt_of(
    exported: dict[str, Any], errors: list[FieldError]
) -> tuple[uuid.UUID | None, datetime | None, str | None]:
    """(event id, receipt time, foreign id) of a record.

    Our ids are UUIDv7s of the receipt time (events are partitioned by it): such an id is kept,
    a record with it alone was received at the instant it encodes, and one with received_at
    too must agree. Any other id is another store's (a migration): the event gets an id of its
    own, and the foreign id becomes its identity (foreign_key). An event without one of our ids
    gets an id of its received_at, or, with none, is received now.
    """
    event_id = foreign_id = received_at = None
    if exported.get("id") is not None:
        event_id, foreign_id = _own_or_foreign(exported["id"], errors)
    if exported.get("received_at") is not None:
        received_at = parse_time(exported["received_at"], "received_at", errors)
    if event_id is not None:
        if exported.get("received_at") is None:
            received_at = uuid7_time(event_id)  # never None: the id is a UUIDv7
        elif received_at is not None and not _id_is_of(event_id, received_at):
            message = "The id must be a UUIDv7 of received_at (events are partitioned by it); omit the id."
            errors.append(FieldError("id", "id_not_of_received_at", message))
    elif received_at is not None and "id" not in {e.field for e in errors}:
        event_id = uuid7_at(received_at)
    return event_id, received_at, foreign_id


def _own_or_foreign(value: Any, errors: list[FieldError]) -> tuple[uuid.UUID | None, str | None]:
    """(our event id, None) for a UUIDv7; (None, the id as written) for any other string or
    integer, another store's id."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        errors.append(FieldError("id", "wrong_type", "Must be a string (a UUIDv7 of ours, or another store's id)."))
        return None, None
    text = str(value)
    try:
        own = uuid.UUID(text)
    except ValueError:
        own = None
    if own is not None and uuid7_time(own) is not None:
        return own, None
    if not text.strip() or "\x00" in text or len(text) > FOREIGN_ID_MAX:
        message = f"Another store's id must be 1 to {FOREIGN_ID_MAX} characters, without NUL."
        errors.append(FieldError("id", "invalid", message))
        return None, None
    return None, text


def _id_is_of(event_id: uuid.UUID, received_at: datetime) -> bool:
    made = uuid7_time(event_id)
    return made is not None and abs(made - received_at) <= ID_TIME_SLACK


class Derived(NamedTuple):
    """What the reader knows of a record's derived key: which repeat of its content in the file
    this is, and the key such a record got before keys were keyed (legacy_key)."""

    legacy_key: str
    repeat: int


class DerivedKeys:
    """Idempotency keys for records that carry neither a key nor an id: a digest of their
    content, plus which repeat of that content in the file this is. Inserting or removing
    other lines changes no key, so a re-run of an edited file stores only what is new, and a
    file that holds the same record twice stores it twice, once per run.

    The key itself is derived in the write path from the record's keyed fingerprint, of its
    protected form (derived_key); the reader counts repeats by the SHA-256 of the record's bytes,
    which was the key until then (kept as legacy_key, recognised on a re-run).

    Remembers one 8-byte digest per distinct record (about 100 bytes each in memory).
    """

    def __init__(self) -> None:
        self._seen: dict[bytes, int] = {}  # 8 bytes of the digest → how often seen so far

    def next_key(self, raw: RawRecord) -> Derived:
        content = raw[2].encode() if len(raw) == 3 else raw[1]
        digest = hashlib.sha256(content).digest()
        repeat = self._seen.get(digest[:8], 0)
        self._seen[digest[:8]] = repeat + 1
        return Derived(_key(digest.hex(), repeat), repeat)


def derived_key(fingerprint: str, repeat: int = 0) -> str:
    """The idempotency key of a keyless, id-less record: its keyed fingerprint (validation.EventIn),
    which readers see and cannot test guesses against, and its repeat in the file."""
    return _key(fingerprint, repeat)


def _key(digest_hex: str, repeat: int) -> str:
    return f"import:{digest_hex[:40]}" + (f":{repeat}" if repeat else "")


def foreign_key(foreign_id: str) -> str:
    """The idempotency key of a record carrying another store's id."""
    return _FOREIGN_PREFIX + foreign_id

"""UUIDv7 (RFC 9562): a 48-bit millisecond timestamp, then random bits; sortable by time."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

_lock = threading.Lock()
_last_timestamp = 0  # (unix_ms << 12) | sub-millisecond fraction of the last id
_MAX_STEP_BACK = 1000 << 12  # one second, in the units of _last_timestamp


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def uuid7(at: datetime | None = None) -> uuid.UUID:
    """A UUIDv7, strictly increasing within this process (method 3: 12 bits of sub-ms precision),
    of the instant at (now when None): an event's id says the instant it was received."""
    global _last_timestamp  # noqa: PLW0603 - process-wide monotonic clock guard
    nanoseconds = time.time_ns() if at is None else (at - _EPOCH) // timedelta(microseconds=1) * 1000
    millis, remainder = divmod(nanoseconds, 1_000_000)
    timestamp = (millis << 12) | (remainder * 4096 // 1_000_000)
    with _lock:
        # Monotonic over small steps back of the clock; after a large one (or a test's time
        # travel) the clock wins: an id must say when its event was received (partitions).
        if _last_timestamp - _MAX_STEP_BACK < timestamp <= _last_timestamp:
            timestamp = _last_timestamp + 1
        _last_timestamp = timestamp
    millis, fraction = timestamp >> 12, timestamp & 0xFFF
    random_bits = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (millis << 80) | (0x7 << 76) | (fraction << 64) | (0b10 << 62) | random_bits
    return uuid.UUID(int=value)


def uuid7_time(value: uuid.UUID) -> datetime | None:
    """The instant a UUIDv7 was made, to the millisecond; None for any other UUID version."""
    if value.version != 7:
        return None
    seconds, millis = divmod(value.int >> 80, 1000)
    return datetime.fromtimestamp(seconds, tz=UTC) + timedelta(milliseconds=millis)


def uuid7_at(instant: datetime) -> uuid.UUID:
    """A UUIDv7 of instant (an imported event's receipt time), with fresh random bits."""
    millis = int(instant.timestamp() * 1000)
    fresh = uuid7().int & ((1 << 80) - 1)  # version, variant and random bits of a new id
    return uuid.UUID(int=(millis << 80) | fresh)

"""The one parser of timestamps that callers send: RFC 3339 with a mandatory offset."""

from __future__ import annotations

import re
from datetime import UTC, datetime

# fromisoformat alone would accept a date without a time, or a time without an offset.
RFC3339_RE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})")
RFC3339_PATTERN = RFC3339_RE.pattern  # for the OpenAPI schema


def parse_rfc3339(text: str) -> datetime:
    """The instant, in UTC; ValueError for another shape or an impossible time (2026-02-30,
    hour 24, or one that leaves the calendar in UTC, like 0001-01-01T00:00:00+01:00).

    In UTC because PostgreSQL refuses offsets beyond ±15:59 that RFC 3339 allows (+23:30)."""
    if not RFC3339_RE.fullmatch(text):
        raise ValueError("not an RFC 3339 time with an offset")
    try:
        return datetime.fromisoformat(text.upper()).astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range") from None

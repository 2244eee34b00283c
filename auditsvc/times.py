"""The one parser of timestamps that callers send: RFC 3339 with a mandatory offset; and the
time arithmetic on such bounds, which must not overflow Python's calendar (years 1 to 9999)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

# fromisoformat alone would accept a date without a time, or a time without an offset.
RFC3339_RE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})")
RFC3339_PATTERN = RFC3339_RE.pattern  # for the OpenAPI schema

# Python's calendar, in UTC; PostgreSQL's timestamptz holds these and more (4713 BC to 294276).
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


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


def parse_rfc3339_bound(text: str) -> datetime:
    """A filter's bound: as parse_rfc3339, but a valid time beyond Python's calendar in UTC
    (year 0000, 0001-01-01T00:00:00+01:00, 9999-12-31T23:59:59-01:00) is clamped to its first
    or last instant, which selects the same events. ValueError only for an impossible time."""
    try:
        return parse_rfc3339(text)
    except ValueError:
        if not RFC3339_RE.fullmatch(text):
            raise
    # Out of range, or impossible? The date, the clock and the offset must each exist; year
    # 0000 (a leap year) is checked as 2000. Then only the calendar's ends were crossed.
    text = text.upper()
    year = text[:4]
    datetime.fromisoformat(("2000" if year == "0000" else year) + text[4:19])
    datetime.fromisoformat("2000-01-01T12:00:00" + text[19:])
    return EARLIEST if year in ("0000", "0001") else LATEST


def shifted(instant: datetime, delta: timedelta) -> datetime:
    """instant + delta, saturating at the ends of the calendar instead of OverflowError."""
    try:
        return instant + delta
    except OverflowError:
        return EARLIEST if delta < timedelta(0) else LATEST

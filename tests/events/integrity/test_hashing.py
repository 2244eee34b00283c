"""Event hashing: both our canonical JSON implementations (the service's fast one and the
offline verifier's dependency-free one) equal the reference RFC 8785 implementation."""

from __future__ import annotations

import random
import string

import orjson
import pytest
import rfc8785

from events.integrity.canonical import canonical_json
from events.integrity.verify_proof import jcs

AWKWARD: list[object] = [
    100.0, -0.0, 0.0, 1e16, 1e21, 1e-7, 0.000123, 123456789.123, 5e-324, 1.7976931348623157e308, 19.99,
    2.0**53, -(2.0**60), 0.1 + 0.2, 1 / 3, 9007199254740991, -9007199254740991, True, False, None,
    "", "\x1f\x7f\u2028\u2029", '"\\/', "é😀", {"😀": 1, "\ufb01": 2, "a": 3}, {"b": [], "a": {}},
]  # fmt: skip


@pytest.mark.parametrize("value", AWKWARD, ids=repr)
def test_canonical_json_matches_rfc8785_on_edge_values(value):
    assert canonical_json({"v": value}) == rfc8785.dumps({"v": value})


def random_string(rng: random.Random) -> str:
    alphabet = string.printable + "éß中😀\ufb01\u2028\x00\x1f"
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(8)))


def random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(7 if depth < 4 else 4)
    if kind == 0:
        return rng.choice([rng.randrange(-(2**53) + 1, 2**53), rng.randrange(-1000, 1000)])
    if kind == 1:
        return rng.choice(
            [rng.uniform(-1e6, 1e6), rng.random() * 10 ** rng.randrange(-10, 25), float(rng.randrange(99))]
        )
    if kind == 2:
        return random_string(rng)
    if kind == 3:
        return rng.choice([True, False, None])
    if kind in (4, 5):
        return {random_string(rng): random_json(rng, depth + 1) for _ in range(rng.randrange(5))}
    return [random_json(rng, depth + 1) for _ in range(rng.randrange(5))]


def test_canonical_json_matches_rfc8785_on_random_documents():
    rng = random.Random(42)
    for _ in range(3000):
        document = {"k": random_json(rng)}
        assert canonical_json(document) == rfc8785.dumps(document), document


@pytest.mark.parametrize("value", AWKWARD, ids=repr)
def test_the_offline_verifiers_jcs_matches_rfc8785_on_edge_values(value):
    assert jcs({"v": value}).encode() == rfc8785.dumps({"v": value})


def test_the_offline_verifiers_jcs_matches_rfc8785_on_random_documents():
    rng = random.Random(4242)
    for _ in range(3000):
        document = {"k": random_json(rng)}
        assert jcs(document).encode() == rfc8785.dumps(document), document


def test_validations_canonical_hint_is_never_wrong():
    from events.ingest.validation import _check_payload, _Errors  # noqa: PLC0415

    rng = random.Random(7)
    fast = 0
    for _ in range(3000):
        payload = {"k": random_json(rng), "plain": "text"}
        errors = _Errors()
        if _check_payload(payload, "payload", errors) and not errors.items:
            fast += 1
            assert orjson.dumps(payload, option=orjson.OPT_SORT_KEYS) == rfc8785.dumps(payload), payload
    assert fast > 300  # the fast path is really exercised


def test_postgresql_writes_times_exactly_as_the_hash_envelope_does(db):
    from datetime import UTC, datetime, timedelta, timezone  # noqa: PLC0415

    from django.db import connection  # noqa: PLC0415

    from events.integrity.hashing import SQL_TIME, format_time  # noqa: PLC0415

    values = [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 11, 30, 23, 0, 0, 1, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    with connection.cursor() as cursor:
        for value in values:
            cursor.execute(f"SELECT {SQL_TIME.format('%s::timestamptz')}", [value])
            assert cursor.fetchone()[0] == format_time(value)

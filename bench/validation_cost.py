"""What parsing an ingest body costs, step by step, against msgspec's alternatives (issue 26, part 1).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python -m bench.validation_cost [--no-docs]

In-process, no HTTP and no database: timeit, the best of 7 repeats, in µs per body, for
  - a single event of bench.ingest.event_bodies' shape, as it sends it (json.dumps: spaced)
    and compact (orjson.dumps: what most serialisers write, and reject_duplicate_keys' fast case);
  - the same with a payload of 30 keys, five of them objects of four keys;
  - a batch of 100 such single events (spaced).
The current path (parse_ingest_body) is timed whole and by step; the msgspec candidates are
(b1) msgspec.json.decode to builtins in place of orjson.loads, and (b2) a msgspec.json.Decoder
of an envelope Struct, followed by the checks msgspec cannot make. b2 answers only when it
accepts an event (its EventIn is checked equal to parse_event's); on any error the current path
would run again, for the current error answers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
import orjson

from bench.django_setup import setup
from bench.report import publish

setup()

from django.conf import settings  # noqa: E402

from auditsvc.times import parse_rfc3339  # noqa: E402
from bench.ingest import event_bodies  # noqa: E402
from events.ingest import validation as v  # noqa: E402

REPEATS = 7

# b2's envelope: the shape parse_event checks, restated as types (a second statement of the rules,
# which is the cost of this design). UNSET keeps "absent" apart from null, which the fingerprint sees.
_Str = Annotated[str, msgspec.Meta(max_length=v.CUSTOMER_MAX)]
_Optional = _Str | msgspec.UnsetType | None


class _Identity(msgspec.Struct, forbid_unknown_fields=True):
    system: Annotated[str, msgspec.Meta(max_length=v.IDENTITY_SYSTEM_MAX)]
    id: Annotated[str, msgspec.Meta(max_length=v.IDENTITY_ID_MAX)]


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    type: Annotated[str, msgspec.Meta(max_length=v.TYPE_NAME_MAX, pattern=f"^(?:{v.TYPE_NAME_RE.pattern})$")]
    customer: _Optional = msgspec.UNSET
    customer_identities: (
        Annotated[list[_Identity], msgspec.Meta(max_length=v.IDENTITIES_MAX)] | msgspec.UnsetType | None
    ) = msgspec.UNSET
    actor: _Optional = msgspec.UNSET
    occurred_at: str | msgspec.UnsetType | None = msgspec.UNSET
    description: Annotated[str, msgspec.Meta(max_length=v.DESCRIPTION_MAX)] | msgspec.UnsetType | None = msgspec.UNSET
    payload: dict[str, Any] | msgspec.UnsetType | None = msgspec.UNSET
    idempotency_key: _Optional = msgspec.UNSET


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    events: list[_Envelope]


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_BATCH = msgspec.json.Decoder(_Batch)


class _Fallback(Exception):
    """b2 does not accept the event: the current path would run for the error answers."""


def _text(value: str | msgspec.UnsetType | None, *, blank: bool = False) -> str | None:
    if value is None or value is msgspec.UNSET:
        return None
    assert isinstance(value, str)
    if "\x00" in value or (not blank and not value.strip()):
        raise _Fallback
    return value


def _struct_event(envelope: _Envelope) -> v.EventIn:
    """The checks msgspec cannot make (NUL, blank, times, payload rules), then the fingerprint
    over the item as sent, rebuilt from the Struct."""
    raw: dict[str, Any] = {f: getattr(envelope, f) for f in envelope.__struct_fields__}
    raw = {k: val for k, val in raw.items() if val is not msgspec.UNSET}
    type_name = _text(envelope.type)
    customer = _text(envelope.customer)
    identities: tuple[tuple[str, str], ...] = ()
    if envelope.customer_identities:
        pairs = [(_text(i.system), _text(i.id)) for i in envelope.customer_identities]
        identities = tuple(dict.fromkeys((s, i) for s, i in pairs if s is not None and i is not None))
        raw["customer_identities"] = [{"system": i.system, "id": i.id} for i in envelope.customer_identities]
        if customer is None:
            raise _Fallback
    occurred_at = None
    if isinstance(envelope.occurred_at, str):
        try:
            occurred_at = parse_rfc3339(envelope.occurred_at)
        except ValueError:
            raise _Fallback from None
        skew = timedelta(seconds=settings.AUDITSVC_MAX_FUTURE_SKEW_SECONDS)
        if not v.EARLIEST_OCCURRED_AT <= occurred_at <= datetime.now(UTC) + skew:
            raise _Fallback
    payload = envelope.payload if isinstance(envelope.payload, dict) else {}
    errors = v._Errors()
    canonical = v._check_payload(payload, "payload", errors) if payload else True
    if errors.items:
        raise _Fallback
    assert type_name is not None
    legacy = v.fingerprint_of(raw)
    return v.EventIn(
        type=type_name,
        customer=customer,
        customer_identities=identities,
        actor=_text(envelope.actor),
        occurred_at=occurred_at,
        description=_text(envelope.description, blank=True),
        payload=payload,
        idempotency_key=_text(envelope.idempotency_key),
        fingerprint=v.keyed_fingerprint(legacy),
        legacy_fingerprint=legacy,
        payload_is_canonical=canonical,
    )


def b2_single(body: bytes, *, duplicates: bool = True) -> v.EventIn:
    event = _struct_event(_ENVELOPE.decode(body))
    if duplicates:
        _duplicates(body)
    return event


def b2_batch(body: bytes, *, duplicates: bool = True) -> list[v.EventIn]:
    events = [_struct_event(e) for e in _BATCH.decode(body).events]
    if duplicates:
        _duplicates(body)
    return events


def _duplicates(body: bytes) -> None:
    # msgspec keeps a repeated key's last value, as orjson does, Structs included. The check as
    # today, whose fast case (orjson writes the body back) needs a builtins document: a second
    # decode. (Without it, every body would take the stdlib pass.)
    v.reject_duplicate_keys(body, msgspec.json.decode(body))


def b1_load_json(body: bytes) -> Any:
    """load_json with msgspec.json.decode in orjson.loads' place."""
    document = msgspec.json.decode(body)
    v.reject_duplicate_keys(body, document)
    return document


def b1_parse(body: bytes) -> v.IngestRequest:
    document = b1_load_json(body)
    if "events" in document:
        return v.IngestRequest(events=_batch_items(document), is_batch=True)
    return v.IngestRequest(events=[v.parse_event(document)], is_batch=False)


def _batch_items(document: dict[str, Any]) -> list[v.EventIn]:
    return v.parse_batch_items(document["events"], max_events=1000, field="events", parse=v.parse_event)


def _keyed(body: str) -> bytes:
    counter = iter(range(10**6))
    return re.sub("__KEY__", lambda _: f"bench-{next(counter)}", body).encode()


def bodies() -> dict[str, bytes]:
    single = _keyed(event_bodies(1, None)[0])
    event = json.loads(single)
    nested: dict[str, Any] = {f"field_{n}": f"value {n}" if n % 3 else n * 1.5 for n in range(25)}
    nested |= {f"object_{n}": {"id": f"o_{n}", "count": n, "ok": True, "tags": ["a", "b"]} for n in range(5)}
    event_30 = {**event, "payload": nested}
    return {
        "single event, spaced (bench.ingest)": single,
        "single event, compact": orjson.dumps(event),
        "single event, 30-key payload, spaced": json.dumps(event_30).encode(),
        "single event, 30-key payload, compact": orjson.dumps(event_30),
        "batch of 100, spaced": _keyed(event_bodies(1, 100)[0]),
    }


def calibrated(call: Callable[[], object]) -> tuple[timeit.Timer, int]:
    """A timer of call on the process's CPU clock (the machine is shared: wall time would count
    the other processes' turns), with as many calls per repeat as fill about 20 ms."""
    timer = timeit.Timer(call, timer=time.process_time)
    number = 1
    while timer.timeit(number) < 0.02:
        number *= 2
    return timer, number


def microseconds(calls: dict[str, Callable[[], object]]) -> dict[str, float]:
    """µs per call, the best of REPEATS; the repeats of all calls interleave, so that a busy
    moment of the machine falls on all of them alike and the best repeat of each is a quiet one."""
    timers = {name: calibrated(call) for name, call in calls.items()}
    best = dict.fromkeys(timers, float("inf"))
    for _ in range(REPEATS):
        for name, (timer, number) in timers.items():
            best[name] = min(best[name], timer.timeit(number) / number * 1e6)
    return best


def measure(body: bytes) -> dict[str, float]:
    document = orjson.loads(body)
    batch = "events" in document
    # b2 must accept what the current path accepts, into the same EventIn.
    current = v.parse_ingest_body(body).events
    assert (b2_batch(body) if batch else [b2_single(body)]) == current
    assert b1_parse(body).events == current

    def parse_alone() -> object:
        return _batch_items(document) if batch else v.parse_event(document)

    b2: Callable[..., object] = b2_single
    if batch:
        b2 = b2_batch
    return microseconds(
        {
            "current: parse_ingest_body (all of it)": lambda: v.parse_ingest_body(body),
            "  load_json (orjson.loads + reject_duplicate_keys)": lambda: v.load_json(body),
            "    orjson.loads alone": lambda: orjson.loads(body),
            "    reject_duplicate_keys alone": lambda: v.reject_duplicate_keys(body, document),
            "  parse_event alone (each event)": parse_alone,
            "b1: msgspec.json.decode alone": lambda: msgspec.json.decode(body),
            "b1: load_json on msgspec.json.decode, then parse_event": lambda: b1_parse(body),
            "b2: Struct decode alone": lambda: (_BATCH if batch else _ENVELOPE).decode(body),
            "b2: Struct decode + remaining checks (no duplicate-key check: a lower bound)": lambda: b2(
                body, duplicates=False
            ),
            "b2: the same + the duplicate-key check as today (a second, builtins decode)": lambda: b2(body),
        }
    )


def command() -> str:
    """This run's command line, for the record (the interpreter as invoked: the venv differs)."""
    url = re.sub(r"(//[^:/@]*):[^@]*@", r"\1:***@", os.environ.get("DATABASE_URL", ""))  # no password
    return (f"DATABASE_URL={url} " if url else "") + f"{sys.executable} -m bench.validation_cost"


B2 = "b2: the same + the duplicate-key check as today (a second, builtins decode)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    started = datetime.now(UTC)
    cases = bodies()
    results = {name: measure(body) for name, body in cases.items()}
    for figures in results.values():
        current = figures["current: parse_ingest_body (all of it)"]
        best = min(figures["b1: load_json on msgspec.json.decode, then parse_event"], figures[B2])
        figures["saved by the better complete msgspec candidate (b1 or b2 with the check)"] = current - best
    rows = list(next(iter(results.values())))
    names = list(cases)
    lines = [
        f"### Decoding and validation: msgspec measured (issue 26, part 1), {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command()}` (timeit, best of {REPEATS}; µs per body; orjson {orjson.__version__}, "
        f"msgspec {msgspec.__version__}).",
        "",
        "| µs per body | " + " | ".join(f"{n} ({len(cases[n]):,} B)" for n in names) + " |",
        "| --- |" + " ---: |" * len(names),
        *(f"| {row.strip()} | " + " | ".join(f"{results[n][row]:.1f}" for n in names) + " |" for row in rows),
    ]
    publish("\n".join(lines), to_docs=not args.no_docs)


if __name__ == "__main__":
    main()

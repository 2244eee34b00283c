"""Event-type schemas: versioned JSON Schemas (draft 2020-12) that a type's payloads are checked
against on ingest, by the type's `validation` (off, warn, enforce).

Registering a version, and what makes one compatible, is events.schema_registry's; this
module checks payloads against what is registered.

Validators are compiled once per version (jsonschema-rs, offline: a `$ref` is never fetched)
and cached per process for one privacy generation (events.privacy_generation): a registration
anywhere moves it, and no process checks with what it cached before.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
from django.db.models import F

from auditsvc.errors import FieldError, InvalidInput
from auditsvc.metrics import SCHEMA_VIOLATIONS
from events.ingest.validation import (
    EventIn,
    ItemPaths,
)
from events.models import EventSchema, EventType
from events.privacy_generation import forget_generation
from events.protection import forget_protected_paths
from events.schema_marks import (
    PERSONAL,
    SERVICE_MARKINGS,
    Marking,
    marking_problems,
    markings_of,
    stored_form,
    strongest,
)

MODES = ("off", "warn", "enforce")
_MAX_ERRORS_PER_EVENT = 20


@dataclass(frozen=True)
class Checker:
    mode: str  # off, warn or enforce
    version: int
    validator: Any  # jsonschema_rs.Draft202012Validator; None when off
    markings: tuple[Marking, ...] = ()  # its sensitive and personal fields, protected in every mode
    stored_validator: Any = None  # the schema as stored payloads meet it (marked fields: anything)


@dataclass(frozen=True)
class Check:
    """What ingest learnt of one payload: the version it was checked against, and whether it passed."""

    version: int | None = None
    valid: bool | None = None
    markings: tuple[Marking, ...] = ()


UNCHECKED = Check()


def compile_schema(schema: Any) -> Any:
    """A validator for schema, or InvalidInput naming what is wrong with it."""
    if not isinstance(schema, dict):
        raise InvalidInput([FieldError("schema", "invalid_schema", "A schema is a JSON object.")])
    try:
        jsonschema_rs.meta.validate(schema)  # first: the markings' walk needs its shape
        validator = jsonschema_rs.Draft202012Validator(schema, offline=True)
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as exc:
        message = str(exc).splitlines()[0]
        raise InvalidInput([FieldError("schema", "invalid_schema", f"Not a valid JSON Schema: {message}")]) from None
    problems = marking_problems(schema)
    if problems:
        raise InvalidInput(problems)
    return validator


def payload_path(path: Sequence[str | int]) -> str:
    """["items", 2, "sku"] → "payload.items[2].sku" (the field name an error carries)."""
    text = "payload"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def violations(validator: Any, payload: dict[str, Any]) -> list[tuple[str, str]]:
    """[(path into the payload, message)], at most _MAX_ERRORS_PER_EVENT."""
    found = []
    for error in validator.iter_errors(payload):
        found.append((payload_path(error.instance_path), error.message))
        if len(found) == _MAX_ERRORS_PER_EVENT:
            break
    return found


# --- Checking on ingest -------------------------------------------------------------------

# (type, version) → (the generation it was read under, its checker): valid while the generation
# is unchanged (events.privacy_generation), however long that is.
_cache: dict[tuple[str, int | None], tuple[int, Checker | None]] = {}
_cache_lock = threading.Lock()


class UnknownVersion(LookupError):
    """A CloudEvent's dataschema names a version its type does not have."""


def forget_cached_checkers() -> None:
    with _cache_lock:
        _cache.clear()
    forget_protected_paths()
    forget_generation()


def checker_for(type_name: str, version: int | None = None, *, generation: int | None) -> Checker | None:
    """The type's mode, markings and its latest version's validator (or version's, when a
    CloudEvent's dataschema names one), or None when the type has no schema, as of generation
    (None: read now, not cached). UnknownVersion for a version the type does not have, whatever its
    mode: the sender meant a schema that is not there.

    Read under generation means read after that generation was seen committed: the checker is at
    least that recent, and exactly it while the generation has not moved."""
    key = (type_name, version)
    cached = _cache.get(key)
    if cached is not None and generation is not None and cached[0] == generation:
        return _known(cached[1], version)
    versions = EventSchema.objects.filter(type__name=type_name).order_by("-version")
    # A database that does not answer raises here, in stream mode too: a type this process holds
    # no checker of the current generation for cannot be checked or protected (the stream's
    # accept answers 503, events.ingest.stream), never stored plain.
    rows = list(versions.values_list("type__validation", "version", "schema"))
    checker = None
    row = next((row for row in rows if version in (None, row[1])), None)
    if row is not None:
        validator = compile_schema(row[2]) if row[0] != "off" else None
        # Protected by the strongest mark any version gave a path, whichever version checks it.
        markings = strongest(marking for other in rows for marking in markings_of(other[2]))
        stored_validator = compile_schema(stored_form(row[2])) if validator is not None and markings else validator
        checker = Checker(mode=row[0], version=row[1], validator=validator, markings=markings,
                          stored_validator=stored_validator)  # fmt: skip
    if generation is not None:
        with _cache_lock:
            _cache[key] = (generation, checker)
    return _known(checker, version)


def _known(checker: Checker | None, version: int | None) -> Checker | None:
    if version is not None and checker is None:
        raise UnknownVersion(version)
    return checker


def count_violations(flagged: Mapping[str, int]) -> None:
    """Warn mode: stored events that failed their type's schema, per type (after their commit)."""
    for name, count in flagged.items():
        EventType.objects.filter(name=name).update(schema_violations=F("schema_violations") + count)
        SCHEMA_VIOLATIONS.labels(type=name).inc(count)


def check_items(items: Sequence[EventIn], paths: ItemPaths, *, generation: int | None) -> list[Check]:
    """Each item's check, against the schemas as of generation (see checker_for). Raises
    InvalidInput (400 schema_violation, a field error per violation, e.g. "events[3].payload.amount")
    when an enforced type's payload fails; nothing is stored then."""
    checks: list[Check] = []
    errors: list[FieldError] = []
    checkers: dict[tuple[str, int | None], Checker | None] = {}
    for index, item in enumerate(items):
        if item.accepted_entry:  # checked when the API accepted it (its MAC proves that)
            checks.append(Check(version=item.checked_version, valid=item.checked_valid))
            continue
        if item.type in SERVICE_MARKINGS:  # the log's own: built-in marks, never a registered schema
            checks.append(Check(markings=service_markings(item)))
            continue
        wanted = (item.type, item.dataschema_version)
        if wanted not in checkers:
            try:
                checkers[wanted] = checker_for(item.type, item.dataschema_version, generation=generation)
            except UnknownVersion:
                message = f"{item.type} has no schema v{item.dataschema_version} (GET its /schemas)."
                errors.append(FieldError(paths(index, "dataschema"), "unknown_schema_version", message))
                checkers[wanted] = None
        checker = checkers[wanted]
        if checker is None:
            checks.append(UNCHECKED)
            continue
        if checker.mode == "off":
            checks.append(Check(markings=checker.markings))
            continue
        # An export's hash is no secret: what it holds is checked too, in the form it is stored in.
        validator = checker.stored_validator if item.proven_export else checker.validator
        found = violations(validator, item.payload)
        if found and checker.mode == "enforce":
            errors += [
                FieldError(paths(index, path), "schema_violation", f"{message} (schema v{checker.version})")
                for path, message in found
            ]
        markings = () if item.proven_export else checker.markings  # an export's are protected already
        checks.append(Check(version=checker.version, valid=not found, markings=markings))
    if errors:
        raise InvalidInput(errors)
    return checks


def service_markings(item: EventIn) -> tuple[Marking, ...]:
    """The built-in marks of one of the log's own records. Personal marks apply to a record about
    a customer (whose key encrypts them); a record about no customer (a staff user's edit) holds
    no customer's data, and nothing could encrypt it."""
    marks = SERVICE_MARKINGS[item.type]
    return marks if item.customer else tuple(m for m in marks if m.kind != PERSONAL)

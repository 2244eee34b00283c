"""Event-type schemas: versioned JSON Schemas (draft 2020-12) that a type's payloads are checked
against on ingest, by the type's `validation` (off, warn, enforce).

A new version must be backward compatible with every earlier one: an event that was valid
stays valid. That is checked twice: structurally (no new required field, no narrowed type,
enum or bound, no new constraint on a property that was there before; the rules in
incompatibilities()) and against the type's latest stored events, which must all still pass.
Staff may force an incompatible version; every registration is itself an audited event.

Validators are compiled once per version (jsonschema-rs, offline: a `$ref` is never fetched)
and cached per process for AUDITSVC_SCHEMA_CACHE_SECONDS, like the API keys.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F

from auditsvc.errors import FieldError, InvalidInput, ProblemError
from auditsvc.metrics import SCHEMA_VIOLATIONS
from events.ingest.validation import (
    PAYLOAD_MAX_DEPTH,
    EventIn,
    ItemPaths,
    event_type_name_errors,
    json_object_errors,
)
from events.models import Event, EventSchema, EventType
from events.privacy import Marking, forget_protected_paths, marking_problems, markings_of, stored_form

MODES = ("off", "warn", "enforce")
RECENT_EVENTS_CHECKED = 500  # stored events a new version must still accept
_MAX_ERRORS_PER_EVENT = 20


@dataclass(frozen=True)
class Checker:
    mode: str  # off, warn or enforce
    version: int
    validator: Any  # jsonschema_rs.Draft202012Validator; None when off
    markings: tuple[Marking, ...] = ()  # its sensitive and personal fields, protected in every mode


@dataclass(frozen=True)
class Check:
    """What ingest learnt of one payload: the version it was checked against, and whether it passed."""

    version: int | None = None
    valid: bool | None = None
    markings: tuple[Marking, ...] = ()


UNCHECKED = Check()


DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
# The registration record (auditsvc.schema.registered) holds the schema one level down in its payload.
SCHEMA_MAX_DEPTH = PAYLOAD_MAX_DEPTH - 1


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


def new_schema_errors(schema: Any) -> list[FieldError]:
    """What refuses a schema before it is compiled for registration: a schema is a JSON object
    the log can store as a payload, and names no meta-schema but draft 2020-12's, which is
    built in: jsonschema-rs fetches any other `$schema` URL (offline covers `$ref` only)."""
    if not isinstance(schema, dict):
        return [FieldError("schema", "invalid_schema", "A schema is a JSON object.")]
    errors = json_object_errors(schema, "schema", max_depth=SCHEMA_MAX_DEPTH)
    if "$schema" in schema and schema["$schema"] not in (DRAFT_2020_12, DRAFT_2020_12 + "#"):
        message = f"$schema, when given, is {DRAFT_2020_12}: schemas are draft 2020-12, and nothing is fetched."
        errors.append(FieldError("schema.$schema", "invalid_schema", message))
    return errors


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


# --- Compatibility ------------------------------------------------------------------------

_NUMBER_TYPES = {"integer", "number"}
_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_HANDLED = {"type", "required", "enum", "properties", "items", "additionalProperties", "description", "title",
            "examples", "default", "$schema", "$id", "$comment", "deprecated", "x-auditsvc",
            *_LOWER_BOUNDS, *_UPPER_BOUNDS}  # fmt: skip


def _types(schema: dict[str, Any]) -> set[str] | None:
    declared = schema.get("type")
    if declared is None:
        return None  # any type
    return {declared} if isinstance(declared, str) else set(declared)


def incompatibilities(old: Any, new: Any, path: str = "payload") -> list[str]:
    """Why an instance valid under old may be invalid under new (empty: compatible)."""
    if new is True or new == {} or old is False:
        return []
    if old is True:
        old = {}
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [f"{path}: a boolean schema that refuses what was allowed"]
    problems = _type_problems(old, new, path) + _value_problems(old, new, path) + _object_problems(old, new, path)
    if "items" in new:
        problems += incompatibilities(old.get("items", True), new["items"], f"{path}[]")
    unknown = sorted(key for key in new if key not in _HANDLED and old.get(key) != new[key])
    if unknown:
        problems.append(f"{path}: new or changed keywords whose compatibility is not checked: {', '.join(unknown)}")
    return problems


def _type_problems(old: dict[str, Any], new: dict[str, Any], path: str) -> list[str]:
    old_types, new_types = _types(old), _types(new)
    if new_types is None:
        return []
    allowed = new_types | ({"integer"} if "number" in new_types else set())
    if old_types is None:
        return [f"{path}: now only of type {', '.join(sorted(new_types))}, any type before"]
    lost = sorted(old_types - allowed)
    return [f"{path}: type {', '.join(lost)} is no longer allowed"] if lost else []


def _value_problems(old: dict[str, Any], new: dict[str, Any], path: str) -> list[str]:
    problems = []
    if "enum" in new:
        dropped = [value for value in old.get("enum", []) if value not in new["enum"]]
        if "enum" not in old:
            problems.append(f"{path}: values are now limited to an enum")
        elif dropped:
            problems.append(f"{path}: enum no longer allows {dropped}")
    problems += [f"{path}: {bound} raised to {new[bound]}" for bound in _LOWER_BOUNDS
                 if bound in new and (bound not in old or new[bound] > old[bound])]  # fmt: skip
    problems += [f"{path}: {bound} lowered to {new[bound]}" for bound in _UPPER_BOUNDS
                 if bound in new and (bound not in old or new[bound] < old[bound])]  # fmt: skip
    return problems


def _object_problems(old: dict[str, Any], new: dict[str, Any], path: str) -> list[str]:
    problems = []
    added_required = sorted(set(new.get("required", [])) - set(old.get("required", [])))
    if added_required:
        problems.append(f"{path}: newly required {', '.join(added_required)}")
    if new.get("additionalProperties") is False and old.get("additionalProperties") is not False:
        problems.append(f"{path}: other properties are no longer allowed")
    # A property new to the schema is accepted: documenting a new optional field is how schemas
    # grow. Events that carried that name before with another shape are what the check against
    # the stored events (register_schema) finds.
    old_properties = old.get("properties", {})
    for name, subschema in new.get("properties", {}).items():
        if name in old_properties:
            problems += incompatibilities(old_properties[name], subschema, f"{path}.{name}")
    return problems


# --- Registering --------------------------------------------------------------------------


def register_schema(
    *, type_name: str, schema: Any, actor: str, force: bool = False, validation: Any = None
) -> tuple[EventSchema, bool]:
    """(the version, whether it is new) of type_name's schema; the type is created with its first
    version, in the same transaction. The same schema as the latest version registers nothing.
    Everything is checked before anything is written: a refused request changes nothing. An
    incompatible schema is refused (409 incompatible_schema) unless forced."""
    from events.access_log import store_service_event  # noqa: PLC0415 - it imports the write path, which imports this

    errors = event_type_name_errors(type_name, "name") + new_schema_errors(schema)
    if validation is not None and validation not in MODES:
        errors.append(FieldError("validation", "invalid_choice", f"validation is one of {', '.join(MODES)}."))
    if errors:
        raise InvalidInput(errors)
    validator = compile_schema(schema)
    with transaction.atomic():
        event_type, _ = EventType.objects.get_or_create(name=type_name)
        locked = EventType.objects.select_for_update().get(pk=event_type.pk)  # one registration at a time
        versions = list(EventSchema.objects.filter(type=locked).order_by("version"))
        if versions and versions[-1].schema == schema and validation in (None, locked.validation):
            return versions[-1], False
        problems = [f"against v{v.version}: {p}" for v in versions for p in incompatibilities(v.schema, schema)]
        # Stored events hold their marked fields protected (HMACs, ciphertexts): those are not checked.
        stored_validator = compile_schema(stored_form(schema)) if markings_of(schema) else validator
        problems += _stored_events_refused(locked, stored_validator)
        if problems and not force:
            raise ProblemError(
                [FieldError("schema", "incompatible_schema", problem) for problem in problems[:50]], status=409
            )
        if versions and versions[-1].schema == schema:
            registered = versions[-1]
        else:
            number = versions[-1].version + 1 if versions else 1
            registered = EventSchema.objects.create(
                type=locked, version=number, schema=schema, registered_by=actor, forced=bool(problems)
            )
        if validation is not None and validation != locked.validation:
            locked.validation = validation
            locked.save(update_fields=["validation"])
        store_service_event(
            type="auditsvc.schema.registered",
            actor=actor,
            description=f"{actor} registered {locked.name} schema v{registered.version}"
            + (" despite incompatibilities" if problems else ""),
            payload={
                "event_type": locked.name,
                "version": registered.version,
                "validation": locked.validation,
                "forced": bool(problems),
                "incompatibilities": problems[:50],
                "schema": schema,
            },
            max_chars=10_000,
        )
    forget_cached_checkers()
    return registered, True


def _stored_events_refused(event_type: EventType, validator: Any) -> list[str]:
    recent = Event.objects.filter(type=event_type).order_by("-occurred_at", "-id")
    problems = []
    for event_id, payload in recent.values_list("id", "payload")[:RECENT_EVENTS_CHECKED]:
        for path, message in violations(validator, payload)[:3]:
            problems.append(f"stored event {event_id} would be refused: {path}: {message}")
        if len(problems) >= 20:
            break
    return problems


# --- Checking on ingest -------------------------------------------------------------------

_cache: dict[tuple[str, int | None], tuple[float, Checker | None]] = {}
_cache_lock = threading.Lock()


class UnknownVersion(LookupError):
    """A CloudEvent's dataschema names a version its type does not have."""


def forget_cached_checkers() -> None:
    with _cache_lock:
        _cache.clear()
    forget_protected_paths()


def checker_for(type_name: str, version: int | None = None) -> Checker | None:
    """The type's mode, markings and its latest version's validator (or version's, when a
    CloudEvent's dataschema names one), or None when the type has no schema. UnknownVersion for a version the
    type does not have, whatever its mode: the sender meant a schema that is not there."""
    key = (type_name, version)
    now = time.monotonic()
    cached = _cache.get(key)
    if cached is not None and now - cached[0] < settings.AUDITSVC_SCHEMA_CACHE_SECONDS:
        return _known(cached[1], version)
    versions = EventSchema.objects.filter(type__name=type_name)
    if version is not None:
        versions = versions.filter(version=version)
    try:
        row = versions.values_list("type__validation", "version", "schema").order_by("-version").first()
    except (OperationalError, InterfaceError):
        if settings.AUDITSVC_INGEST_MODE != "stream":
            raise
        # Stream mode takes events while PostgreSQL is away: what this process knew is used (or,
        # for a type it never saw, nothing: such an event is stored unchecked), asked again in a
        # second.
        checker = cached[1] if cached is not None else None
        with _cache_lock:
            _cache[key] = (now - max(0, settings.AUDITSVC_SCHEMA_CACHE_SECONDS - 1), checker)
        return checker
    checker = None
    if row is not None:
        validator = compile_schema(row[2]) if row[0] != "off" else None
        checker = Checker(mode=row[0], version=row[1], validator=validator, markings=markings_of(row[2]))
    with _cache_lock:
        _cache[key] = (now, checker)
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


def check_items(items: Sequence[EventIn], paths: ItemPaths) -> list[Check]:
    """Each item's check. Raises InvalidInput (400 schema_violation, a field error per violation,
    e.g. "events[3].payload.amount") when an enforced type's payload fails; nothing is stored then."""
    checks: list[Check] = []
    errors: list[FieldError] = []
    checkers: dict[tuple[str, int | None], Checker | None] = {}
    for index, item in enumerate(items):
        if item.in_stored_form:  # checked before, when the API accepted it or the export was made
            checks.append(Check(version=item.checked_version, valid=item.checked_valid))
            continue
        wanted = (item.type, item.dataschema_version)
        if wanted not in checkers:
            try:
                checkers[wanted] = checker_for(item.type, item.dataschema_version)
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
        found = violations(checker.validator, item.payload)
        if found and checker.mode == "enforce":
            errors += [
                FieldError(paths(index, path), "schema_violation", f"{message} (schema v{checker.version})")
                for path, message in found
            ]
        checks.append(Check(version=checker.version, valid=not found, markings=checker.markings))
    if errors:
        raise InvalidInput(errors)
    return checks

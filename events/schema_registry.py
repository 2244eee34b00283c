"""Registering event-type schemas: a new version must be backward compatible with every
earlier one, so that an event that was valid stays valid. That is checked twice: structurally
(no new required field, no narrowed type, enum or bound, no new constraint on a property that
was there before; the rules in incompatibilities()) and against the type's latest stored
events, which must all still pass. Staff may force an incompatible version; every registration
is itself an audited event. Checking payloads against the versions is events.schemas'.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction

from auditsvc.errors import FieldError, InvalidInput, ProblemError
from events.ingest.stream import announce_generation
from events.ingest.validation import PAYLOAD_MAX_DEPTH, event_type_name_errors, json_object_errors
from events.models import Event, EventSchema, EventType, Source
from events.privacy_generation import bump, read_generation
from events.schema_marks import markings_of, stored_form, weakened_marks
from events.schemas import MODES, compile_schema, forget_cached_checkers, violations
from events.service_events import store_service_event

RECENT_EVENTS_CHECKED = 500  # stored events a new version must still accept
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
# The registration record (auditsvc.schema.registered) holds the schema one level down in its payload.
SCHEMA_MAX_DEPTH = PAYLOAD_MAX_DEPTH - 1


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
    *,
    type_name: str,
    schema: Any,
    actor: str,
    force: bool = False,
    validation: Any = None,
    source: Source | None = None,
) -> tuple[EventSchema, bool]:
    """(the version, whether it is new) of type_name's schema; the type is created with its first
    version, in the same transaction. The same schema as the latest version registers nothing.
    Everything is checked before anything is written: a refused request changes nothing. An
    incompatible schema is refused (409 incompatible_schema) unless forced. source: the registering
    key's; it must own the type (403 not_type_owner), and claims it when no source does. None:
    staff, who may register for any type."""
    errors = event_type_name_errors(type_name, "name") + new_schema_errors(schema)
    if validation is not None and validation not in MODES:
        errors.append(FieldError("validation", "invalid_choice", f"validation is one of {', '.join(MODES)}."))
    if errors:
        raise InvalidInput(errors)
    validator = compile_schema(schema)
    strict = settings.AUDITSVC_STRICT_EVENT_TYPES and source is not None
    if strict and not EventType.objects.filter(name=type_name).exists():
        message = f"Event type '{type_name}' is not registered and this deployment is strict: staff add types."
        raise InvalidInput([FieldError("name", "unknown_event_type", message)])
    latest = EventSchema.objects.filter(type__name=type_name).order_by("-version").select_related("type").first()
    if latest is not None and latest.schema == schema and validation in (None, latest.type.validation):
        announce_generation(read_generation())  # a retry after a 503 from the announcement below
        return latest, False
    with transaction.atomic():
        # First: every write in flight holds the generation's share lock, and takes it before any
        # other (a write's foreign-key check waits on the type locked below: the other order
        # would deadlock). Committed with the new version, so no process checks with the old.
        generation = bump()
        # Told to the stream's accept after the commit (the outermost one, should a caller hold
        # a transaction) and before the answer; a failure raises from here, 503 to the caller.
        transaction.on_commit(lambda: announce_generation(generation))
        event_type, _ = EventType.objects.get_or_create(name=type_name, defaults={"owner": source})
        locked = EventType.objects.select_for_update().get(pk=event_type.pk)  # one registration at a time
        if source is not None:
            _claim_ownership(locked, source)
        versions = list(EventSchema.objects.filter(type=locked).order_by("version"))
        if versions and versions[-1].schema == schema and validation in (None, locked.validation):
            transaction.set_rollback(True)  # registered meanwhile: nothing changed, nothing to bump
            return versions[-1], False
        problems = [
            f"against v{v.version}: {problem}"
            for v in versions
            for problem in incompatibilities(v.schema, schema) + weakened_marks(v.schema, schema)
        ]
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


def _claim_ownership(event_type: EventType, source: Source) -> None:
    """One service's schema key cannot put a schema on another service's type (and so refuse its
    events): the owner's keys may, and staff; an unowned type goes to the first to register."""
    if event_type.owner_id is None:
        event_type.owner = source
        event_type.save(update_fields=["owner"])
    elif event_type.owner_id != source.pk:
        owner = Source.objects.get(pk=event_type.owner_id).slug
        message = (f"{event_type.name} belongs to source '{owner}': only its schema keys, or staff, register "
                   "its schemas.")  # fmt: skip
        raise ProblemError([FieldError("name", "not_type_owner", message)], status=403)


def _stored_events_refused(event_type: EventType, validator: Any) -> list[str]:
    recent = Event.objects.filter(type=event_type).order_by("-occurred_at", "-id")
    problems = []
    for event_id, payload in recent.values_list("id", "payload")[:RECENT_EVENTS_CHECKED]:
        for path, message in violations(validator, payload)[:3]:
            problems.append(f"stored event {event_id} would be refused: {path}: {message}")
        if len(problems) >= 20:
            break
    return problems

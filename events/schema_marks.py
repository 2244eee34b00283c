"""What a schema says about privacy: the properties it marks "x-auditsvc": "sensitive" or
"personal", the schema as stored payloads meet it, and the marks' own rules. Pure functions of
a schema; events.protection applies them to payloads.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from auditsvc.errors import FieldError

SENSITIVE = "sensitive"
PERSONAL = "personal"
MARKS = (SENSITIVE, PERSONAL)
ANY_ITEM = "*"  # a path step through every element of an array
# How strongly a kind protects: a sensitive value is never readable again, a personal one is
# until its customer is erased.
STRENGTH = {PERSONAL: 1, SENSITIVE: 2}

Path = tuple[str, ...]


@dataclass(frozen=True)
class Marking:
    path: Path  # into the payload; ANY_ITEM steps through arrays
    kind: str  # SENSITIVE or PERSONAL


def markings_of(schema: Any, path: Path = ()) -> tuple[Marking, ...]:
    """Every property the schema marks, through `properties` and array `items`."""
    if not isinstance(schema, dict):
        return ()
    found: list[Marking] = []
    if path and schema.get("x-auditsvc") in MARKS:
        return (Marking(path, schema["x-auditsvc"]),)
    for name, subschema in (schema.get("properties") or {}).items():
        found += markings_of(subschema, (*path, name))
    if isinstance(schema.get("items"), dict):
        found += markings_of(schema["items"], (*path, ANY_ITEM))
    return tuple(found)


def strongest(markings: Iterable[Marking]) -> tuple[Marking, ...]:
    """The marks of all a type's versions as one: each path with the strongest kind any version
    gave it (so that a sender cannot pick an older, weaker version), none under a path marked at
    least as strongly, deepest first (protect() hashes a child before it encrypts its parent)."""
    best: dict[Path, str] = {}
    for marking in markings:
        if marking.path not in best or STRENGTH[marking.kind] > STRENGTH[best[marking.path]]:
            best[marking.path] = marking.kind
    kept = [
        Marking(path, kind)
        for path, kind in best.items()
        if not any(_covers(best.get(path[:n]), kind) for n in range(1, len(path)))
    ]
    return tuple(sorted(kept, key=lambda marking: (-len(marking.path), marking.path)))


def weakened_marks(old: Any, new: Any) -> list[str]:
    """Where new protects less than old: a mark removed, or sensitive made personal (a mark on an
    enclosing property, at least as strong, covers it). An incompatible change."""
    marks = {marking.path: marking.kind for marking in markings_of(new)}
    return [
        f"payload.{dotted(marking.path)} was marked {marking.kind}: a version may not remove or weaken a mark"
        for marking in markings_of(old)
        if not any(_covers(marks.get(marking.path[:n]), marking.kind) for n in range(1, len(marking.path) + 1))
    ]


def _covers(kind: str | None, other: str) -> bool:
    return kind is not None and STRENGTH[kind] >= STRENGTH[other]


def stored_form(schema: Any) -> Any:
    """The schema as stored payloads meet it: every marked property accepts anything (it holds an
    HMAC or a ciphertext), the rest is as it was."""
    if not isinstance(schema, dict):
        return schema
    if schema.get("x-auditsvc") in MARKS:
        return {}
    copy = dict(schema)
    if isinstance(schema.get("properties"), dict):
        copy["properties"] = {name: stored_form(sub) for name, sub in schema["properties"].items()}
    if isinstance(schema.get("items"), dict):
        copy["items"] = stored_form(schema["items"])
    return copy


def marking_problems(schema: Any, path: str = "schema") -> list[FieldError]:
    """Unknown x-auditsvc values, a mark on the whole payload (a mark is on a property), a mark
    inside a marked property (the outer one protects all of it), and a mark where markings_of
    does not look (under $defs, allOf, additionalProperties, ...): it would protect nothing."""
    problems = _reached_problems(schema, path, inside_mark=False)
    reached = {problem.field for problem in problems} | set(_reached(schema, path))
    for where in _every_mark(schema, path):
        if where not in reached:
            message = ('x-auditsvc is read only through "properties" and array "items": mark the property '
                       "itself, not a subschema under $defs, $ref, allOf, additionalProperties or such.")  # fmt: skip
            problems.append(FieldError(where, "invalid_marking", message))
    return problems


def _reached_problems(schema: Any, path: str, *, inside_mark: bool) -> list[FieldError]:
    problems = []
    if isinstance(schema, dict):
        mark = schema.get("x-auditsvc")
        if mark is not None and (mark not in MARKS or path == "schema"):
            where = "the payload itself" if path == "schema" else path
            message = f'x-auditsvc is "sensitive" or "personal", on a property; not {mark!r} on {where}.'
            problems.append(FieldError(path, "invalid_marking", message))
        elif mark is not None and inside_mark:
            message = "A mark inside a marked property: the outer mark protects all of it; mark one or the other."
            problems.append(FieldError(path, "invalid_marking", message))
        inside = inside_mark or mark is not None
        for name, subschema in (schema.get("properties") or {}).items():
            problems += _reached_problems(subschema, f"{path}.properties.{name}", inside_mark=inside)
        problems += _reached_problems(schema.get("items"), f"{path}.items", inside_mark=inside)
    return problems


def _reached(schema: Any, path: str) -> list[str]:
    """Where a mark is read: the schema, then down `properties` and a single `items` schema."""
    if not isinstance(schema, dict):
        return []
    found = [path]
    for name, subschema in (schema.get("properties") or {}).items():
        found += _reached(subschema, f"{path}.properties.{name}")
    return found + _reached(schema.get("items"), f"{path}.items")


def _every_mark(value: Any, path: str) -> list[str]:
    """Where x-auditsvc appears at all, in any subschema (or anything else) of the document."""
    if isinstance(value, dict):
        found = [path] if isinstance(value.get("x-auditsvc"), str) else []  # (a property may be so named)
        for key, item in value.items():
            found += _every_mark(item, f"{path}.{key}")
        return found
    if isinstance(value, list):
        return [where for index, item in enumerate(value) for where in _every_mark(item, f"{path}[{index}]")]
    return []


def has_path(payload: Any, path: Path) -> bool:
    """Whether payload holds something a mark at path protects: the value there, or a value of
    another shape on the way (protect() protects that whole)."""
    if not path:
        return True
    head, rest = path[0], path[1:]
    if head == ANY_ITEM:
        return any(has_path(item, rest) for item in payload) if isinstance(payload, list) else payload is not None
    if isinstance(payload, dict):
        return head in payload and has_path(payload[head], rest)
    return payload is not None


def dotted(path: Path) -> str:
    return ".".join("[]" if part == ANY_ITEM else part for part in path).replace(".[]", "[]")


# The log's own types carry no schema; these are their marks. A customer's contact fields
# (customers.Customer.email, display_name) are personal wherever the log records them: an admin
# change of a customer holds them before and after, encrypted under that customer's data key
# (the record names the customer), so an erasure reaches them too. Search terms in read records
# are HMACs already when recorded (events.protection.redacted_filters).
_CONTACT_FIELDS = ("email", "display_name")
SERVICE_MARKINGS: dict[str, tuple[Marking, ...]] = {
    f"auditsvc.admin.{action}": tuple(Marking((side, name), PERSONAL) for side in sides for name in _CONTACT_FIELDS)
    for action, sides in (("add", ("after",)), ("change", ("before", "after")), ("delete", ("before",)))
}

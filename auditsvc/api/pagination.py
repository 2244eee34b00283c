"""Keyset (cursor) pagination by default, page numbers on request; neither counts a whole table.

Cursor mode: opaque, signed `next`/`previous` links carrying the last row's sort key, so page
10,000 costs what page 1 costs (an index range scan). The cursor also carries the ordering
and a digest of the filters: a cursor replayed with other filters is refused as stale.

Page mode (`?page=N`): OFFSET pages with metadata. total_records is exact up to
COUNT_LIMIT rows (a count over `LIMIT COUNT_LIMIT + 1`); beyond that it is the planner's
estimate and the response says so (total_is_estimate).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from django.conf import settings
from django.db.models import QuerySet
from rest_framework.request import Request

from auditsvc.counting import bounded_count
from auditsvc.errors import FieldError, InvalidInput

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_PAGE = 100_000  # page mode is OFFSET-based: deeper pages are what cursors are for
PAGINATION_PARAMS = frozenset({"cursor", "page", "page_size", "ordering"})


@dataclass(frozen=True)
class Ordering:
    """A public ordering name and the columns that make it total (the last one is unique)."""

    name: str
    columns: tuple[str, ...]  # SQL column expressions, e.g. '"events_event"."occurred_at"'
    attributes: tuple[str, ...]  # the same values read off a result row
    descending: bool

    def order_by(self) -> list[str]:
        return [f"-{a}" if self.descending else a for a in self.attributes]


@dataclass
class Page:
    rows: list[Any]
    body: dict[str, Any]


def _sign(payload: bytes) -> str:
    key = hashlib.sha256(b"auditsvc.cursor" + settings.SECRET_KEY.encode()).digest()
    return hmac.new(key, payload, hashlib.sha256).hexdigest()[:32]


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    return str(value)


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict) and "t" in value:
        return datetime.fromisoformat(value["t"])
    return value


def _bad(parameter: str, code: str, message: str) -> InvalidInput:
    return InvalidInput([FieldError(parameter, code, message)])


def _page_size(request: Request) -> int:
    raw = request.query_params.get("page_size")
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise _bad("page_size", "invalid_page_size", f"page_size must be an integer from 1 to {MAX_PAGE_SIZE}.")
    return int(raw)


def filters_digest(request: Request) -> str:
    """A digest of the request's filter parameters (everything but pagination)."""
    items = sorted(
        (key, value)
        for key in request.query_params
        if key not in PAGINATION_PARAMS
        for value in request.query_params.getlist(key)
    )
    return hashlib.sha256(orjson.dumps(items)).hexdigest()[:16]


def choose_ordering(request: Request, orderings: dict[str, Ordering], default: str) -> Ordering:
    name = request.query_params.get("ordering", default)
    if name not in orderings:
        raise _bad("ordering", "invalid_ordering", f"ordering must be one of: {', '.join(orderings)}.")
    return orderings[name]


def getattr_path(row: Any, path: str) -> Any:
    for part in path.split("__"):
        row = getattr(row, part)
    return row


Render = Callable[[list[Any]], list[Any]]  # a page's rows → its results, all at once
PositionOf = Callable[[Any, str], Any]  # (row, one of Ordering.attributes) → its value


def each(render_row: Callable[[Any], Any]) -> Render:
    """A Render that renders row by row."""
    return lambda rows: [render_row(row) for row in rows]


def paginate(
    request: Request,
    queryset: QuerySet[Any],
    *,
    ordering: Ordering,
    render: Render,
    position_of: PositionOf = getattr_path,
) -> dict[str, Any]:
    """One page of queryset as a response body: {"results": [...], "next", "previous"} or page mode.
    render gets the page's rows at once (one key lookup, one pass); position_of reads a row's sort
    key for the cursor links (default: model attributes; value rows name their own)."""
    if "page" in request.query_params:
        if request.query_params.get("cursor"):  # an empty cursor is no cursor, as in cursor mode
            raise _bad("page", "invalid_pagination", "Use either cursor or page, not both.")
        return _number_page(request, queryset, ordering, render)
    return _cursor_page(request, queryset, ordering, render, position_of)


def _cursor_page(
    request: Request, queryset: QuerySet[Any], ordering: Ordering, render: Render, position_of: PositionOf
) -> dict[str, Any]:
    size = _page_size(request)
    digest = filters_digest(request)
    backwards = False
    raw_cursor = request.query_params.get("cursor")
    if raw_cursor:
        position = _read_cursor(raw_cursor, ordering, digest)
        backwards = position["d"] == "prev"
        values = [_decode_value(v) for v in position["v"]]
        queryset = _after(queryset, ordering, values, reverse=backwards)
    order = ordering.order_by()
    if backwards:
        order = [o[1:] if o.startswith("-") else f"-{o}" for o in order]
    rows = list(queryset.order_by(*order)[: size + 1])
    has_more = len(rows) > size
    rows = rows[:size]
    if backwards:
        rows.reverse()
    has_next = has_more if not backwards else True
    has_previous = bool(raw_cursor) if not backwards else has_more

    def sort_key(row: Any) -> list[Any]:
        return [position_of(row, attribute) for attribute in ordering.attributes]

    return {
        "next": _link(request, ordering, digest, sort_key(rows[-1]), "next") if rows and has_next else None,
        "previous": _link(request, ordering, digest, sort_key(rows[0]), "prev") if rows and has_previous else None,
        "results": render(rows),
    }


def _after(queryset: QuerySet[Any], ordering: Ordering, values: list[Any], *, reverse: bool) -> QuerySet[Any]:
    """Rows strictly after values in the ordering (before them when reverse).

    A row comparison, (a, b) < (x, y), because PostgreSQL turns it into one index range
    condition; the ORM has no spelling for it, hence extra().
    """
    descending = ordering.descending != reverse
    operator = "<" if descending else ">"
    columns = ", ".join(ordering.columns)
    placeholders = ", ".join(["%s"] * len(values))
    return queryset.extra(where=[f"({columns}) {operator} ({placeholders})"], params=values)  # noqa: S610 - columns are ours, values are parameters


def _read_cursor(raw: str, ordering: Ordering, digest: str) -> dict[str, Any]:
    invalid = _bad("cursor", "invalid_cursor", "The cursor is malformed or was not issued by this service.")
    try:
        body, signature = raw.rsplit(".", 1)
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (ValueError, binascii.Error):
        raise invalid from None
    if not hmac.compare_digest(_sign(payload), signature):
        raise invalid
    position: dict[str, Any] = orjson.loads(payload)
    if position.get("o") != ordering.name or position.get("f") != digest:
        raise _bad(
            "cursor",
            "stale_cursor",
            "The cursor belongs to another ordering or other filters; start again without it.",
        )
    return position


def _link(request: Request, ordering: Ordering, digest: str, sort_key: list[Any], direction: str) -> str:
    values = [_encode_value(value) for value in sort_key]
    payload = orjson.dumps({"o": ordering.name, "f": digest, "d": direction, "v": values})
    token = base64.urlsafe_b64encode(payload).rstrip(b"=").decode() + "." + _sign(payload)
    params = [(k, v) for k in request.query_params if k != "cursor" for v in request.query_params.getlist(k)]
    params.append(("cursor", token))
    return request.build_absolute_uri(request.path) + "?" + urlencode(params)


def _number_page(request: Request, queryset: QuerySet[Any], ordering: Ordering, render: Render) -> dict[str, Any]:
    raw = request.query_params.get("page", "")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise _bad("page", "invalid_page", f"page must be an integer from 1 to {MAX_PAGE:,}; use cursors to go deeper.")
    page, size = int(raw), _page_size(request)
    total, is_estimate = bounded_count(queryset)
    last_page = max(1, math.ceil(total / size))
    offset = (page - 1) * size
    rows = list(queryset.order_by(*ordering.order_by())[offset : offset + size])
    return {
        "metadata": {
            "current_page": page,
            "page_size": size,
            "first_page": 1,
            "last_page": last_page,
            "total_records": total,
            "total_is_estimate": is_estimate,
        },
        "results": render(rows),
    }

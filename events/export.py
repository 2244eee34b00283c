"""Streaming export of a filtered event set, as NDJSON or CSV, in constant memory.

PostgreSQL formats every row (json_build_object / CSV) and streams it with COPY TO STDOUT;
Python only forwards the bytes. That is what makes 100k+ events/s possible. The columns are
the API's own (events.queries.EVENT_COLUMNS, which the read path selects too), in its order.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Func, QuerySet, TextField, Value

from events.models import Event
from events.queries import EVENT_COLUMNS, EVENT_FIELDS, text_of

FORMATS = ("ndjson", "csv", "cloudevents")
CSV_COLUMNS = EVENT_FIELDS
_CSV_HEADER = (",".join(CSV_COLUMNS) + "\n").encode()


def _select_sql(queryset: QuerySet[Event], export_format: str) -> tuple[str, tuple[Any, ...]]:
    """The filtered, ordered query selecting the export's line (NDJSON) or columns (CSV).

    Every field is an expression of that query itself, not of an outer query wrapped around
    it: PostgreSQL then formats the rows in its parallel workers (most of an export's cost)
    instead of in the one backend that gathers them.
    """
    columns = EVENT_COLUMNS  # the payload as jsonb: json_build_object nests it
    if export_format == "ndjson":
        pairs = [part for name in CSV_COLUMNS for part in (Value(name), columns[name])]
        # json_build_object gives json, which COPY writes as its text: one document per row.
        rows = queryset.values_list(Func(*pairs, function="json_build_object", output_field=TextField()))
    elif export_format == "cloudevents":
        rows = queryset.values_list(_cloudevent(columns))
    else:  # COPY writes each column as its text (the payload's JSON text in one field)
        rows = queryset.values_list(*(columns[name] for name in CSV_COLUMNS))
    sql, params = rows.query.sql_with_params()
    return sql, tuple(params)


def _cloudevent(columns: dict[str, Any]) -> Func:
    """A CloudEvents 1.0 structured-mode document (JSON format), the mapping of the ingest side
    (events.ingest.cloudevents) reversed: id is the idempotency key (the event id when it has
    none), source the origin (the source's slug when it has none), subject the customer, time
    occurred_at, data the payload; actor, description, and as auditsvc* extensions the event
    id, receipt time, hash, source and origin, which import_events reads back exactly.
    Attributes without a value are left out, as the format asks; data is kept as stored."""
    attributes = {
        "specversion": Value("1.0"),
        "id": Func(F("idempotency_key"), text_of("id"), function="COALESCE", output_field=TextField()),
        "source": Func(F("origin"), columns["source"], function="COALESCE", output_field=TextField()),
        "type": columns["type"], "time": columns["occurred_at"],
        "subject": columns["customer"], "datacontenttype": Value("application/json"), "actor": columns["actor"],
        "description": columns["description"], "auditsvcid": text_of("id"),
        "auditsvcreceivedat": columns["received_at"], "auditsvchash": columns["hash"],
        "auditsvcsource": columns["source"], "auditsvcorigin": F("origin"),
    }  # fmt: skip
    pairs = [part for name, value in attributes.items() for part in (Value(name), value)]
    built = Func(*pairs, function="jsonb_build_object", output_field=TextField())
    context = Func(built, function="jsonb_strip_nulls", output_field=TextField())
    data = Func(Value("data"), F("payload"), function="jsonb_build_object", output_field=TextField())
    return Func(context, data, template="(%(expressions)s)::text", arg_joiner=" || ", output_field=TextField())


def _copy_statement(queryset: QuerySet[Event], export_format: str) -> tuple[str, tuple[Any, ...]]:
    select, params = _select_sql(queryset, export_format)
    if export_format == "csv":
        return f"COPY ({select}) TO STDOUT WITH (FORMAT csv)", params
    # One JSON document per line. CSV mode with delimiter and quote characters that JSON text
    # never contains unescaped (\x01, \x02) emits each document verbatim; text mode would
    # double every backslash.
    return f"COPY ({select}) TO STDOUT WITH (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02')", params


def stream_events(
    queryset: QuerySet[Event],
    *,
    export_format: str,
    chunk_bytes: int = 256 * 1024,
    on_finish: Callable[[int], None] | None = None,
) -> Iterator[bytes]:
    """Yield the export in chunks of about chunk_bytes, straight from PostgreSQL; then (or when
    the client goes away) tell on_finish how many rows were read for it."""
    rows = 0
    try:
        for chunk, chunk_rows in _chunks(queryset, export_format, chunk_bytes):
            rows += chunk_rows
            yield chunk
    finally:
        if on_finish is not None:
            on_finish(rows)


def _chunks(queryset: QuerySet[Event], export_format: str, chunk_bytes: int) -> Iterator[tuple[bytes, int]]:
    statement, params = _copy_statement(queryset, export_format)
    with transaction.atomic(), connection.cursor() as cursor:
        # An export may legitimately run for minutes: lift the statement timeout for it alone.
        cursor.execute("SET LOCAL statement_timeout = 0")
        raw_cursor: Any = cursor.cursor
        # psycopg's COPY does not take parameters: render them client-side first.
        query = raw_cursor.mogrify(statement, params) if params else statement
        # PostgreSQL sends a message per row: gather them into chunks in one growing buffer.
        buffer = bytearray(_CSV_HEADER if export_format == "csv" else b"")
        rows = 0
        with raw_cursor.copy(query) as copy:
            for data in copy:  # one row each
                buffer += data
                rows += 1
                if len(buffer) >= chunk_bytes:
                    yield bytes(buffer), rows
                    buffer.clear()
                    rows = 0
        if buffer:
            yield bytes(buffer), rows


def gzip_stream(chunks: Iterator[bytes]) -> Iterator[bytes]:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    for chunk in chunks:
        compressed = compressor.compress(chunk)
        if compressed:
            yield compressed
    yield compressor.flush()

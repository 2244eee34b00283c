"""Reading import files: NDJSON, CSV and CloudEvents records, plain or gzip, from a path or stdin."""

from __future__ import annotations

import csv
import gzip
import io
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from auditsvc.errors import FieldError, InvalidInput
from events.ingest.cloudevents import EXPORT_EXTENSIONS, native_record
from events.ingest.validation import reject_duplicate_keys

FORMATS = ("ndjson", "csv", "cloudevents")
# A record as read: (line number, the line's bytes) for NDJSON and CloudEvents; for CSV,
# which the reader must parse in order, (line number, the record, its text).
RawRecord = tuple[int, bytes] | tuple[int, dict[str, Any], str]


def open_input(path: str) -> IO[bytes]:
    """A binary stream of path ('-' for stdin); gzip is detected by its magic bytes."""
    raw: IO[bytes] = sys.stdin.buffer if path == "-" else Path(path).open("rb")  # noqa: SIM115 - caller closes
    buffered: Any = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[type-var]
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=buffered)  # type: ignore[return-value]
    stream: IO[bytes] = buffered
    return stream


def read_raw_records(stream: IO[bytes], export_format: str) -> Iterator[RawRecord]:
    """Every non-blank record of stream with its line number, for BatchImporter to parse."""
    if export_format == "csv":
        yield from _csv_records(io.TextIOWrapper(stream, encoding="utf-8", newline=""))
        return
    for number, line in enumerate(stream, start=1):
        if not line.isspace():
            yield number, line.strip()


def bytes_read(stream: IO[bytes]) -> int:
    """How far into its file (compressed, for gzip) stream has read: for a progress estimate."""
    raw: Any = getattr(stream, "fileobj", None) or stream
    try:
        return int(raw.tell())
    except (OSError, ValueError):
        return 0


_CSV_OPTIONAL = (
    "customer",
    "actor",
    "description",
    "idempotency_key",
    "occurred_at",
    "received_at",
    "id",
    "hash",
    "origin",
)


def _csv_records(text_stream: Iterable[str]) -> Iterator[RawRecord]:
    reader = csv.DictReader(text_stream)
    for row in reader:
        record: dict[str, Any] = {k: v for k, v in row.items() if k is not None}
        yield reader.line_num, record, orjson.dumps(record).decode()


def from_csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV row (all strings) → the ingest shape: empty means absent, payload is JSON text."""
    record = dict(row)
    for name in _CSV_OPTIONAL:
        if record.get(name) == "":
            record[name] = None  # CSV cannot tell NULL from "": empty means absent
    payload = record.pop("payload", None)
    if payload:
        data = payload.encode()
        try:
            record["payload"] = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise InvalidInput([FieldError("payload", "malformed_json", "payload is not valid JSON.")]) from None
        reject_duplicate_keys(data, record["payload"])
    return record


def from_cloudevent(document: Any) -> tuple[dict[str, Any], int | None]:
    """A CloudEvents record (events.ingest.cloudevents has the mapping) → the import's shape (the
    native fields, `origin`, and the `source` that chooses the import's source when --source is
    not given) and the schema version its dataschema names. A record of an auditsvc export (it
    has `auditsvcid`) keeps its id, receipt time, hash, source and origin from the export's
    extensions; another CloudEvent's `source` is its origin, and names the import's source too."""
    record, origin, version = native_record(document, exported="auditsvcid" in document)
    if "auditsvcid" in document:
        for extension, name in EXPORT_EXTENSIONS.items():
            record[name] = document.get(extension)
        if record.get("idempotency_key") == record["id"]:
            record.pop("idempotency_key")  # the export's id stood in for a missing key
    else:
        record["source"] = origin
        record["origin"] = origin
    return {k: v for k, v in record.items() if v is not None}, version

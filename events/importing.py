"""Bulk import: records from NDJSON, CSV or CloudEvents files through the one write path.

Each record is validated by the same rules as the API (events.validation) and stored by
events.ingest.ingest_events in batches. Records that fail go to a rejects list with their
line number and field errors; the rest of the file goes on. Re-running a file stores nothing
twice: records keep their idempotency key, exported events keep their id, and any other
record gets a key derived from its content and line number.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import queue
import re
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson
from django.db import connection

from auditsvc.errors import FieldError, InvalidInput, ProblemError
from events.ingest import hash_for, ingest_events
from events.models import Source
from events.validation import DATETIME_RE, EventIn, parse_event

FORMATS = ("ndjson", "csv", "cloudevents")
_INDEX = re.compile(r"^events\[(\d+)\]")
# Batches stored concurrently, each in its own transaction: PostgreSQL's index maintenance
# for one batch overlaps with the next one's hashing in Python.
WRITERS = 2
# Import-only fields of an exported event; the API refuses them.
_EXPORT_FIELDS = ("id", "received_at", "source", "hash")


@dataclass
class Reject:
    line: int
    errors: list[FieldError]
    record: str

    def as_json(self) -> bytes:
        return orjson.dumps({"line": self.line, "errors": [e.as_dict() for e in self.errors], "record": self.record})


@dataclass
class ImportStats:
    read: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    last_line: int = 0
    interrupted: bool = False

    def summary(self) -> str:
        return (
            f"read {self.read}, stored {self.stored}, duplicates skipped {self.duplicates}, rejected {self.rejected}"
            + (f" (interrupted after line {self.last_line})" if self.interrupted else "")
        )


@dataclass
class _Pending:
    line: int
    item: EventIn
    text: str


class Importer:
    """Validates records and stores them in per-source batches; see import_events.

    Parsing runs in the caller's thread, storing in WRITERS writer threads: while PostgreSQL
    takes one batch (the GIL is released while psycopg waits), the next is hashed and parsed.
    Batches may commit out of order; each is still all-or-nothing and deduplicated.
    """

    def __init__(self, *, default_source: Source | None, batch_size: int, on_reject: Callable[[Reject], None]) -> None:
        self.default_source = default_source
        self.batch_size = batch_size
        self.stats = ImportStats()
        self._on_reject = on_reject
        self._lock = threading.Lock()  # stats and the rejects sink, shared with the writer
        self._batches: dict[int, list[_Pending]] = {}
        self._sources: dict[str, Source | None] = {}
        self._queue: queue.Queue[tuple[Source, list[_Pending]] | None] = queue.Queue(maxsize=WRITERS)
        self._writer_error: BaseException | None = None
        self._writers = [
            threading.Thread(target=self._write_batches, name=f"import-writer-{n}", daemon=True) for n in range(WRITERS)
        ]
        for writer in self._writers:
            writer.start()

    def add(self, line: int, record: dict[str, Any], text: str) -> None:
        self._count_read(line)
        try:
            source, item = self._parse(record, text, line)
        except InvalidInput as exc:
            self._reject(Reject(line, exc.errors, text))
            return
        batch = self._batches.setdefault(source.pk, [])
        batch.append(_Pending(line, item, text))
        if len(batch) >= self.batch_size:
            self._enqueue(source, self._batches.pop(source.pk))

    def add_malformed(self, line: int, text: str) -> None:
        self._count_read(line)
        self._reject(Reject(line, [FieldError(None, "malformed_record", "Not a JSON object.")], text))

    def run(
        self, stream: IO[bytes], export_format: str, *, stop: Callable[[], bool], progress: Callable[[int], object]
    ) -> ImportStats:
        """Import every record of stream; when stop() turns true, store the current batch and end."""
        try:
            for line, record, text in read_records(stream, export_format):
                if record is None:
                    self.add_malformed(line, text)
                else:
                    self.add(line, record, text)
                progress(1)
                if stop():
                    self.stats.interrupted = True
                    break
        finally:
            self.finish()
        return self.stats

    def finish(self) -> None:
        """Store what is buffered and wait for the writer; re-raises an error it met."""
        for source_id, batch in list(self._batches.items()):
            self._enqueue(Source.objects.get(pk=source_id), batch)
        self._batches.clear()
        for _ in self._writers:
            self._queue.put(None)
        for writer in self._writers:
            writer.join()
        self._writers = []
        if self._writer_error is not None:
            raise self._writer_error

    def _count_read(self, line: int) -> None:
        with self._lock:
            self.stats.read += 1
            self.stats.last_line = line

    def _reject(self, reject: Reject) -> None:
        with self._lock:
            self.stats.rejected += 1
            self._on_reject(reject)

    def _enqueue(self, source: Source, batch: list[_Pending]) -> None:
        if self._writer_error is not None:
            raise self._writer_error
        self._queue.put((source, batch))

    def _write_batches(self) -> None:
        try:
            while (work := self._queue.get()) is not None:
                self._store(*work)
        except BaseException as exc:
            self._writer_error = exc
            while self._queue.get() is not None:  # unblock the producer until it finishes
                pass
        finally:
            connection.close()  # this thread's own database connection

    def _store(self, source: Source, batch: list[_Pending]) -> None:
        """Store a batch; records the database refuses are rejected, the rest retried."""
        while batch:
            try:
                result = ingest_events(source=source, items=[p.item for p in batch], is_batch=True)
            except ProblemError as exc:
                failed = {int(m.group(1)) for e in exc.errors if e.field and (m := _INDEX.match(e.field))}
                if not failed:  # an error about the whole batch: reject it whole
                    failed = set(range(len(batch)))
                for index in sorted(failed):
                    errors = [_strip_index(e) for e in exc.errors if e.field is None or _index_of(e) in (index, None)]
                    self._reject(Reject(batch[index].line, errors, batch[index].text))
                batch = [p for i, p in enumerate(batch) if i not in failed]
                continue
            with self._lock:
                self.stats.stored += result.created
                self.stats.duplicates += result.duplicates
            return

    def _parse(self, record: dict[str, Any], text: str, line: int) -> tuple[Source, EventIn]:
        exported = {name: record.pop(name) for name in _EXPORT_FIELDS if name in record}
        source = self._source(exported.get("source"))
        errors: list[FieldError] = []
        event_id = received_at = None
        if exported.get("id") is not None:
            try:
                event_id = uuid.UUID(str(exported["id"]))
            except ValueError:
                errors.append(FieldError("id", "invalid", "Not a UUID."))
        if exported.get("received_at") is not None:
            received_at = _parse_time(exported["received_at"], "received_at", errors)
        # A record without a key of its own (and not an exported event, which dedupes by id)
        # gets one derived from its content and line: a re-run finds the same keys.
        derived = None
        if record.get("idempotency_key") is None and exported.get("id") is None:
            derived = f"import:{line}:{hashlib.sha256(text.strip().encode()).hexdigest()[:40]}"
        try:
            item = parse_event(record, idempotency_header=derived)
        except InvalidInput as exc:
            raise InvalidInput(exc.errors + errors) from None
        if errors:
            raise InvalidInput(errors)
        if event_id is not None and received_at is not None:
            item = replace(item, event_id=event_id, received_at=received_at)
            expected = exported.get("hash")
            if expected and expected != hash_for(source=source, item=item, event_id=event_id, received_at=received_at):
                raise InvalidInput([FieldError("hash", "hash_mismatch", "The fields do not give this hash.")])
        return source, item

    def _source(self, name: Any) -> Source:
        if self.default_source is not None:
            return self.default_source  # --source wins; the record's own is ignored
        if not isinstance(name, str) or not name:
            raise InvalidInput([FieldError("source", "required", "Give --source, or a source in every record.")])
        if name not in self._sources:
            self._sources[name] = Source.objects.filter(slug=name).first()
        source = self._sources[name]
        if source is None:
            message = f"No source '{name}' (manage.py create_source)."
            raise InvalidInput([FieldError("source", "unknown_source", message)])
        return source


def _parse_time(value: Any, name: str, errors: list[FieldError]) -> datetime | None:
    if not isinstance(value, str) or not DATETIME_RE.fullmatch(value):
        errors.append(FieldError(name, "invalid_datetime", "Must be an RFC 3339 time with an offset."))
        return None
    return datetime.fromisoformat(value.upper())


def _index_of(error: FieldError) -> int | None:
    match = _INDEX.match(error.field or "")
    return int(match.group(1)) if match else None


def _strip_index(error: FieldError) -> FieldError:
    return replace(error, field=_INDEX.sub("", error.field or "").lstrip(".") or None)


# --- reading records ------------------------------------------------------------------------


def open_input(path: str) -> IO[bytes]:
    """A binary stream of path ('-' for stdin); gzip is detected by its magic bytes."""
    raw: IO[bytes] = sys.stdin.buffer if path == "-" else Path(path).open("rb")  # noqa: SIM115 - caller closes
    buffered: Any = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[type-var]
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=buffered)  # type: ignore[return-value]
    stream: IO[bytes] = buffered
    return stream


def read_records(stream: IO[bytes], export_format: str) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line number, record or None when unparseable, original text) for every record."""
    if export_format == "csv":
        yield from _csv_records(io.TextIOWrapper(stream, encoding="utf-8", newline=""))
        return
    for number, raw_line in enumerate(stream, start=1):
        line = raw_line.strip()
        if not line:
            continue
        text = line.decode("utf-8", errors="replace")
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            yield number, None, text
            continue
        if export_format == "cloudevents" and isinstance(record, dict):
            record = from_cloudevent(record)
        yield number, record if isinstance(record, dict) else None, text


_CSV_OPTIONAL = ("customer", "actor", "description", "idempotency_key", "occurred_at", "received_at", "id", "hash")


def _csv_records(text_stream: Iterable[str]) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    reader = csv.DictReader(text_stream)
    for row in reader:
        record: dict[str, Any] = {k: v for k, v in row.items() if k is not None}
        text = orjson.dumps(record).decode()
        for name in _CSV_OPTIONAL:
            if record.get(name) == "":
                record[name] = None  # CSV cannot tell NULL from "": empty means absent
        if record.get("payload"):
            try:
                record["payload"] = orjson.loads(record["payload"])
            except orjson.JSONDecodeError:
                yield reader.line_num, None, text
                continue
        else:
            record.pop("payload", None)
        yield reader.line_num, record, text


def from_cloudevent(event: dict[str, Any]) -> dict[str, Any]:
    """CloudEvents 1.0 (JSON format) → the ingest shape: id is the idempotency key, subject
    the customer, time occurred_at, data the payload; `actor`/`description` extensions."""
    record: dict[str, Any] = {
        "type": event.get("type"),
        "idempotency_key": event.get("id"),
        "occurred_at": event.get("time"),
        "customer": event.get("subject"),
        "payload": event.get("data", {}),
    }
    for extension in ("actor", "description"):
        if extension in event:
            record[extension] = event[extension]
    if "source" in event:
        record["source"] = event["source"]
    return {k: v for k, v in record.items() if v is not None}

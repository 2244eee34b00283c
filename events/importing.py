"""Bulk import: records from NDJSON, CSV or CloudEvents files through the one write path.

Each record is validated by the same rules as the API (events.validation) and stored by
events.ingest.ingest_events in batches. Records that fail go to a rejects list with their
line number and field errors; the rest of the file goes on. Re-running a file stores nothing
twice: records keep their idempotency key, exported events keep their id, and any other
record gets a key derived from its content and line number.

Validating and hashing cost more Python time per record than PostgreSQL spends storing it,
so that work runs in worker processes (one GIL each): the importing process only reads
lines, hands out batches and collects the outcome.
"""

from __future__ import annotations

import csv
import gc
import gzip
import hashlib
import io
import multiprocessing
import os
import queue
import re
import signal
import sys
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import IO, Any

import orjson
from django.db import connection, connections

from auditsvc.errors import FieldError, InvalidInput, ProblemError
from events import type_counts
from events.ingest import hash_for, ingest_events
from events.models import Source
from events.validation import DATETIME_RE, EventIn, parse_event, reject_duplicate_keys

FORMATS = ("ndjson", "csv", "cloudevents")
_INDEX = re.compile(r"^events\[(\d+)\]")
# An import storing fewer events than this leaves the statistics to autovacuum.
ANALYZE_MIN_EVENTS = 10_000
# Import-only fields of an exported event; the API refuses them.
_EXPORT_FIELDS = ("id", "received_at", "source", "hash")
# A record as read: (line number, the line's bytes) for NDJSON and CloudEvents; for CSV,
# which the reader must parse in order, (line number, the record, its text).
RawRecord = tuple[int, bytes] | tuple[int, dict[str, Any], str]


def default_workers() -> int:
    """One worker per CPU, at most four: beyond that PostgreSQL's index upkeep is the limit."""
    return max(1, min(4, os.cpu_count() or 1))


class ImportFailed(RuntimeError):
    """A worker met an error that is not about one record (e.g. the database went away)."""


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
class BatchOutcome:
    """What a worker reports for one batch."""

    records: int
    stored: int = 0
    duplicates: int = 0
    rejects: list[Reject] = field(default_factory=list)


class Importer:
    """Reads records and hands them, in batches, to worker processes that validate and store
    them (see BatchImporter); collects the counts and the rejects.

    Batches may commit out of order; each is still all-or-nothing and deduplicated. The
    task queue is bounded, so memory stays constant whatever the file's size.
    """

    def __init__(
        self,
        *,
        default_source: Source | None,
        batch_size: int,
        on_reject: Callable[[Reject], None],
        workers: int | None = None,
    ) -> None:
        self.default_source = default_source
        self.batch_size = batch_size
        self.workers = workers or default_workers()
        self.stats = ImportStats()
        self._on_reject = on_reject

    def run(
        self, stream: IO[bytes], export_format: str, *, stop: Callable[[], bool], progress: Callable[[int], object]
    ) -> ImportStats:
        """Import every record of stream; when stop() turns true, store what was read and end.

        progress(n) is called as batches of n records are done.
        """
        context = multiprocessing.get_context("fork")  # workers inherit the configured Django
        tasks: Any = context.Queue(maxsize=self.workers)
        outcomes: Any = context.Queue()
        connections.close_all()  # a forked worker must not share this process's connection
        batch_importer = BatchImporter(self.default_source, export_format)
        processes = [
            context.Process(
                target=_work, args=(batch_importer, tasks, outcomes), name=f"import-worker-{n}", daemon=True
            )
            for n in range(self.workers)
        ]
        gc.freeze()  # the workers' collections then leave the inherited objects' pages shared
        for process in processes:
            process.start()
        gc.unfreeze()
        pool = _Pool(processes, tasks, outcomes, self._collect, progress)
        try:
            self._feed(pool, stream, export_format, stop)
        except KeyboardInterrupt:  # a second Ctrl-C: no waiting
            pool.abort()
            raise
        except BaseException:  # e.g. an unreadable file: store what was read, then say why
            _finish_or_abort(pool)
            raise
        _finish_or_abort(pool)
        return self.stats

    def _feed(self, pool: _Pool, stream: IO[bytes], export_format: str, stop: Callable[[], bool]) -> None:
        batch: list[RawRecord] = []
        for record in read_raw_records(stream, export_format):
            batch.append(record)
            self.stats.read += 1
            self.stats.last_line = record[0]
            if len(batch) >= self.batch_size:
                if not pool.submit(batch):
                    return  # a worker failed: finish() says why
                batch = []
            if stop():
                self.stats.interrupted = True
                break
        if batch:  # the rest, also when interrupted
            pool.submit(batch)

    def _collect(self, outcome: BatchOutcome) -> None:
        self.stats.stored += outcome.stored
        self.stats.duplicates += outcome.duplicates
        self.stats.rejected += len(outcome.rejects)
        for reject in outcome.rejects:
            self._on_reject(reject)


class _Pool:
    """The worker processes seen from the importing process: submit batches, gather outcomes."""

    def __init__(
        self,
        processes: Sequence[BaseProcess],
        tasks: Any,
        outcomes: Any,
        collect: Callable[[BatchOutcome], None],
        progress: Callable[[int], object],
    ) -> None:
        self.processes, self.tasks, self.outcomes = processes, tasks, outcomes
        self.collect, self.progress = collect, progress
        self.running = len(processes)
        self.error: str | None = None

    def submit(self, batch: list[RawRecord]) -> bool:
        """Queue a batch (waiting while the queue is full); False once the import has failed."""
        while self.error is None:
            self._gather(block=False)
            try:
                self.tasks.put(batch, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def finish(self) -> None:
        """Let the workers store what was submitted, then end them; raise what went wrong."""
        sentinels = len(self.processes)
        while sentinels and self.running:
            try:
                self.tasks.put(None, timeout=0.5)
                sentinels -= 1
            except queue.Full:
                self._gather(block=False)
        while self.running:
            self._gather(block=True)
        for process in self.processes:
            process.join()
        if self.error is not None:
            raise ImportFailed(self.error)

    def abort(self) -> None:
        """End the workers at once: a batch being stored rolls back with its transaction."""
        self.tasks.cancel_join_thread()  # batches nobody will read must not hold up the exit
        for process in self.processes:
            process.kill()
        for process in self.processes:
            process.join()
        self.running = 0

    def _gather(self, *, block: bool) -> None:
        while self.running:
            try:
                kind, value = self.outcomes.get(timeout=0.5) if block else self.outcomes.get_nowait()
            except queue.Empty:
                if any(process.exitcode not in (None, 0) for process in self.processes):
                    self.running = 0
                    self.error = self.error or "An import worker died unexpectedly (out of memory?)."
                    for process in self.processes:
                        process.kill()
                if not block:
                    return
                continue
            if kind == "batch":
                self.collect(value)
                self.progress(value.records)
            elif kind == "error":
                self.error = self.error or value
            else:  # "done"
                self.running -= 1
            if block:
                return


def _finish_or_abort(pool: _Pool) -> None:
    try:
        pool.finish()
    except KeyboardInterrupt:
        pool.abort()
        raise


def _work(batch_importer: BatchImporter, tasks: Any, outcomes: Any) -> None:
    """A worker process: import batches until the None sentinel, then flush and report done."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the importing process's to handle
    failed = False
    try:
        while (batch := tasks.get()) is not None:
            if failed:
                continue  # keep draining so the importing process is never blocked
            try:
                outcomes.put(("batch", batch_importer.import_batch(batch)))
            except Exception:
                failed = True
                outcomes.put(("error", "".join(traceback.format_exception_only(sys.exc_info()[1])).strip()))
        type_counts.flush()
    finally:
        connection.close()
        outcomes.put(("done", None))


class BatchImporter:
    """Parses, validates and stores one batch of raw records (in a worker process)."""

    def __init__(self, default_source: Source | None, export_format: str) -> None:
        self.default_source = default_source
        self.export_format = export_format
        self._sources: dict[str, Source | None] = {}

    def import_batch(self, batch: list[RawRecord]) -> BatchOutcome:
        outcome = BatchOutcome(records=len(batch))
        by_source: dict[int, tuple[Source, list[_Pending]]] = {}
        for raw in batch:
            try:
                source, item = self._parse_raw(raw)
            except InvalidInput as exc:
                outcome.rejects.append(Reject(raw[0], exc.errors, _text_of(raw)))
                continue
            by_source.setdefault(source.pk, (source, []))[1].append(_Pending(raw, item))
        for source, pendings in by_source.values():
            self._store(source, pendings, outcome)
        return outcome

    def _parse_raw(self, raw: RawRecord) -> tuple[Source, EventIn]:
        if len(raw) == 3:  # CSV: split into fields by the reader already
            line, row, text = raw
            return self._parse(line, from_csv_row(row), text.encode())
        line, data = raw
        try:
            record = orjson.loads(data)
        except orjson.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            raise InvalidInput([FieldError(None, "malformed_record", "Not a JSON object.")])
        reject_duplicate_keys(data, record)  # the API's check of the same JSON text
        if self.export_format == "cloudevents":
            record = from_cloudevent(record)
        return self._parse(line, record, data)

    def _store(self, source: Source, batch: list[_Pending], outcome: BatchOutcome) -> None:
        """Store a batch; records the database refuses are rejected, the rest retried."""
        while batch:
            try:
                result = ingest_events(source=source, items=[p.item for p in batch], is_batch=True, permanent_keys=True)
            except ProblemError as exc:
                failed = {int(m.group(1)) for e in exc.errors if e.field and (m := _INDEX.match(e.field))}
                if not failed:  # an error about the whole batch: reject it whole
                    failed = set(range(len(batch)))
                for index in sorted(failed):
                    errors = [_strip_index(e) for e in exc.errors if e.field is None or _index_of(e) in (index, None)]
                    outcome.rejects.append(Reject(batch[index].raw[0], errors, _text_of(batch[index].raw)))
                batch = [p for i, p in enumerate(batch) if i not in failed]
                continue
            outcome.stored += result.created
            outcome.duplicates += result.duplicates
            return

    def _parse(self, line: int, record: dict[str, Any], data: bytes) -> tuple[Source, EventIn]:
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
            derived = derived_key(line, data)
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


@dataclass(slots=True)
class _Pending:
    raw: RawRecord
    item: EventIn


def _text_of(raw: RawRecord) -> str:
    return raw[2] if len(raw) == 3 else raw[1].decode("utf-8", errors="replace")


def derived_key(line: int, data: bytes) -> str:
    """The idempotency key of a record that has none: a re-run of the file finds the same."""
    return f"import:{line}:{hashlib.sha256(data.strip()).hexdigest()[:40]}"


def refresh_statistics(stored: int) -> bool:
    """ANALYZE the tables an import grew by a tenth or more, as autovacuum would, only later:
    until then the planner takes them for their old size and may plan searches and exports
    badly. True when it ran."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = 'events_event'::regclass")
        known = max(0.0, cursor.fetchone()[0])  # -1: never analysed
        if stored < max(ANALYZE_MIN_EVENTS, 0.1 * known):
            return False
        cursor.execute("ANALYZE events_event, events_pendingseal")
    return True


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


_CSV_OPTIONAL = ("customer", "actor", "description", "idempotency_key", "occurred_at", "received_at", "id", "hash")


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

"""Bulk import: records from NDJSON, CSV or CloudEvents files through the one write path.

Each record is validated by the same rules as the API (events.ingest.validation) and stored by
events.ingest.ingest_events in batches. Records that fail go to a rejects list with their
line number and field errors; the rest of the file goes on. Re-running a file stores nothing
twice: records keep their idempotency key, exported events keep their id, a record with
another store's id gets the key import-id:<that id>, and any other record gets a key derived
from its content and how often that content came before it.

Validating and hashing cost more Python time per record than PostgreSQL spends storing it,
so that work runs in worker processes (one GIL each): the importing process only reads
lines, hands out batches and collects the outcome.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import queue
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from multiprocessing.process import BaseProcess
from typing import IO, Any

import orjson
from django.conf import settings
from django.db import connection, connections

from auditsvc.errors import FieldError, InvalidInput, ProblemError
from events.ingest import type_counts
from events.ingest.cloudevents import STRUCTURED, check_origin, error_names
from events.ingest.formats import RawRecord, from_cloudevent, from_csv_row, read_raw_records
from events.ingest.import_identity import Derived, DerivedKeys, foreign_key, receipt_of
from events.ingest.validation import (
    EventIn,
    parse_event,
    reject_duplicate_keys,
)
from events.ingest.write import hash_for, ingest_each
from events.models import SERVICE_SOURCE, Source

# The log's own records (reads, admin changes, retirements) are written by the log alone: an
# imported one could be backdated under the seals. Another auditsvc's go under a source of yours.
SERVICE_SOURCE_REFUSED = (
    f"Records of the source '{SERVICE_SOURCE}' are this log's own and are not imported; "
    "import another auditsvc's export with --source <a source of yours>."
)

# An import storing fewer events than this leaves the statistics to autovacuum.
ANALYZE_MIN_EVENTS = 10_000
# Import-only fields of an exported event; the API refuses them.
_EXPORT_FIELDS = ("id", "received_at", "source", "hash", "origin")


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
        batch: list[KeyedRecord] = []
        derived_keys = DerivedKeys()
        for record in read_raw_records(stream, export_format):
            batch.append((record, derived_keys.next_key(record)))
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

    def submit(self, batch: list[KeyedRecord]) -> bool:
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

    def import_batch(self, batch: list[KeyedRecord]) -> BatchOutcome:
        outcome = BatchOutcome(records=len(batch))
        by_source: dict[int, tuple[Source, list[_Pending]]] = {}
        for raw, derived in batch:
            try:
                source, item = self._parse_raw(raw, derived)
            except InvalidInput as exc:
                outcome.rejects.append(Reject(raw[0], exc.errors, _text_of(raw)))
                continue
            by_source.setdefault(source.pk, (source, []))[1].append(_Pending(raw, item))
        for source, pendings in by_source.values():
            self._store(source, pendings, outcome)
        return outcome

    def _parse_raw(self, raw: RawRecord, derived: Derived) -> tuple[Source, EventIn]:
        if len(raw) == 3:  # CSV: split into fields by the reader already
            line, row, _ = raw
            return self._parse(line, from_csv_row(row), derived)
        line, data = raw
        try:
            record = orjson.loads(data)
        except orjson.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            raise InvalidInput([FieldError(None, "malformed_record", "Not a JSON object.")])
        reject_duplicate_keys(data, record)  # the API's check of the same JSON text
        if self.export_format == "cloudevents":
            with error_names(STRUCTURED):
                record, version = from_cloudevent(record)
                return self._parse(line, record, derived, dataschema_version=version)
        return self._parse(line, record, derived)

    def _store(self, source: Source, batch: list[_Pending], outcome: BatchOutcome) -> None:
        """Store a batch; records the write path refuses are rejected, the rest stored."""
        results = ingest_each(source=source, items=[p.item for p in batch], permanent_keys=True)
        for pending, result in zip(batch, results, strict=True):
            if isinstance(result, ProblemError):
                outcome.rejects.append(Reject(pending.raw[0], result.errors, _text_of(pending.raw)))
            elif result.created:
                outcome.stored += 1
            else:
                outcome.duplicates += 1

    def _parse(
        self, line: int, record: dict[str, Any], derived: Derived, *, dataschema_version: int | None = None
    ) -> tuple[Source, EventIn]:
        """The re-run rule: a record is the same event again when it carries the same
        idempotency key; else the same id (ours, or another store's: see receipt_of); else the
        same content (see DerivedKeys)."""
        exported = {name: record.pop(name) for name in _EXPORT_FIELDS if name in record}
        source = self._source(exported.get("source"))
        errors: list[FieldError] = []
        event_id, received_at, foreign_id = receipt_of(exported, errors)
        key: str | None = None  # the record's own idempotency_key, if any, wins
        derives = False  # its key is derived from it once protected (write.checked_and_protected)
        if record.get("idempotency_key") is None:
            if foreign_id is not None:
                key = foreign_key(foreign_id)
            elif exported.get("id") is None:
                derives = True
        origin = exported.get("origin")
        if origin is not None:
            origin = check_origin(origin, "origin", errors)
        try:
            item = parse_event(record, idempotency_header=key, origin=origin, dataschema_version=dataschema_version)
        except InvalidInput as exc:
            raise InvalidInput(exc.errors + errors) from None
        if item.occurred_at and received_at and item.occurred_at > received_at + _future_skew():
            message = "occurred_at is further after received_at than AUDITSVC_MAX_FUTURE_SKEW_SECONDS allows."
            errors.append(FieldError("occurred_at", "in_future", message))
        if errors:
            raise InvalidInput(errors)
        if derives:
            item = replace(item, derived_key_repeat=derived.repeat, legacy_key=derived.legacy_key)
        if event_id is not None and received_at is not None:
            item = replace(item, event_id=event_id, received_at=received_at)
            expected = exported.get("hash")  # another store's hash is not one of ours to check
            if expected and foreign_id is None:
                if expected != hash_for(source=source, item=item, event_id=event_id, received_at=received_at):
                    raise InvalidInput([FieldError("hash", "hash_mismatch", "The fields do not give this hash.")])
                # The hash is no secret: anyone can compute one over a plain payload. Only a record
                # whose marked fields are protected, too, is one of our exports, stored as it is:
                # the write path confirms that under the privacy generation it writes in.
                item = replace(item, proven_export=True)
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
        if source.slug == SERVICE_SOURCE:
            raise InvalidInput([FieldError("source", "reserved_source", SERVICE_SOURCE_REFUSED)])
        return source


def _future_skew() -> timedelta:
    return timedelta(seconds=settings.AUDITSVC_MAX_FUTURE_SKEW_SECONDS)


@dataclass(slots=True)
class _Pending:
    raw: RawRecord
    item: EventIn


def _text_of(raw: RawRecord) -> str:
    return raw[2] if len(raw) == 3 else raw[1].decode("utf-8", errors="replace")


# What the reader hands a worker: the record, and the key it gets if it carries none.
KeyedRecord = tuple[RawRecord, Derived]


def refresh_statistics(stored: int) -> bool:
    """ANALYZE the tables an import grew by a tenth or more, as autovacuum would, only later:
    until then the planner takes them for their old size and may plan searches and exports
    badly. True when it ran."""
    with connection.cursor() as cursor:
        # The partitions' estimates: autovacuum never analyses a partitioned parent itself.
        cursor.execute(
            "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events_event'::regclass"
        )
        known = float(cursor.fetchone()[0])  # -1 (never analysed) counts as 0
        if stored < max(ANALYZE_MIN_EVENTS, 0.1 * known):
            return False
        cursor.execute("ANALYZE events_event, events_pendingseal")
    return True

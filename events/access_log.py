"""Every access to the log is itself logged, as events of the service's own source "auditsvc".

Reads (`auditsvc.read`): a read must not wait for its own record. record_read() appends to this
process's buffer and returns; a daemon thread stores what has gathered through the one write
path (ingest_events), in batches, each record with an idempotency key so that a retried batch
stores nothing twice. A batch the database refuses to take (it is away) stays in the buffer and
is tried again. stop_access_log() stores what is left: gunicorn's worker_exit calls it, so a
graceful shutdown or a recycled worker loses nothing it gathered; so does atexit elsewhere.

Changes made in the admin (`auditsvc.admin.<action>`, events.admin_changes) are stored at
once, in the transaction of the change itself: the change and its record commit together.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection

from auditsvc.errors import ProblemError
from auditsvc.metrics import READS_UNRECORDED
from events import protection
from events.ingest.validation import EventIn, parse_event
from events.ingest.write import ingest_each
from events.service_events import MAX_VALUE_CHARS, READ_TYPE, clean, service_source

logger = logging.getLogger(__name__)

_BATCH = 500


def query_filters(params: Any, *, skip: tuple[str, ...] = (), personal: tuple[str, ...] = ()) -> dict[str, Any]:
    """A request's query parameters (a QueryDict) as a record shows them: one value, or the list.
    A value sought in a sensitive or personal field (payload marks; personal: the parameters
    searching a customer's contact fields) is recorded as its HMAC, never as asked: the record
    must not keep what the events themselves do not, nor what erasure destroys (events.protection)."""
    filters = {key: values[0] if len(values) == 1 else values for key, values in params.lists() if key not in skip}
    return protection.redacted_filters(filters, personal=personal)


def record_read(*, actor: str, via: str, endpoint: str, returned: int, details: dict[str, Any]) -> None:
    """Gather one read: who (actor), through what (via "api" or "admin", the endpoint), what was
    asked (details: filters, the event or customer shown) and how many events it returned."""
    if not settings.AUDITSVC_AUDIT_READS:
        return
    noun = "event" if returned == 1 else "events"
    raw = {
        "type": READ_TYPE,
        "actor": actor,
        "occurred_at": datetime.now(UTC).isoformat(),
        "description": f"{actor} read {returned} {noun} via {via} {endpoint}"[:MAX_VALUE_CHARS],
        "payload": clean({"via": via, "endpoint": endpoint, "returned": returned, **details}),
        "idempotency_key": f"read:{uuid.uuid4().hex}",
    }
    _recorder.add(raw)


def flush_access_log() -> int:
    """Store every read gathered so far, in this thread; the number stored."""
    return _recorder.store_pending()


def stop_access_log(timeout: float = 15.0) -> None:
    """Store what is left and stop the background thread (a graceful shutdown)."""
    _recorder.stop(timeout)


def pending_reads() -> int:
    return _recorder.pending()


def discard_pending_reads() -> None:
    """Tests: forget what a test gathered without storing it."""
    _recorder.discard()


class _Recorder:
    def __init__(self) -> None:
        self._pending: deque[dict[str, Any]] = deque()
        self._wake = threading.Condition()
        self._store_lock = threading.Lock()  # one batch at a time: the thread, a flush, a stop
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._exit_registered = False

    def add(self, raw: dict[str, Any]) -> None:
        with self._wake:
            if len(self._pending) >= settings.AUDITSVC_AUDIT_READS_MAX_PENDING:
                READS_UNRECORDED.inc()
                logger.error("access log: %d reads wait to be stored; this one is not recorded", len(self._pending))
                return
            self._pending.append(raw)
            if len(self._pending) >= _BATCH:
                self._wake.notify()
        if settings.AUDITSVC_AUDIT_READS_IN_BACKGROUND:
            self._ensure_running()

    def pending(self) -> int:
        return len(self._pending)

    def discard(self) -> None:
        with self._wake:
            self._pending.clear()

    def _ensure_running(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._wake:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="auditsvc-access-log", daemon=True)
            self._thread.start()
        if not self._exit_registered:
            atexit.register(stop_access_log)
            self._exit_registered = True

    def _run(self) -> None:
        backoff = 0.0
        interval = settings.AUDITSVC_AUDIT_READS_FLUSH_SECONDS
        try:
            while True:
                with self._wake:
                    if not self._stopping:
                        self._wake.wait(backoff or interval)
                    if self._stopping:
                        return
                try:
                    self.store_pending()
                    backoff = 0.0
                except DatabaseError:
                    backoff = min(30.0, max(1.0, backoff * 2))
                    logger.warning("access log: the database did not take the reads; again in %.0f s", backoff)
                    connection.close()  # a fresh connection next time
        finally:
            connection.close()

    def store_pending(self) -> int:
        stored = 0
        with self._store_lock:
            while self._pending:
                with self._wake:
                    batch = [self._pending.popleft() for _ in range(min(_BATCH, len(self._pending)))]
                try:
                    stored += _store(batch)
                except BaseException:
                    with self._wake:
                        self._pending.extendleft(reversed(batch))  # first in line again
                    raise
        return stored

    def stop(self, timeout: float) -> None:
        thread = self._thread
        if thread is not None:
            with self._wake:
                self._stopping = True
                self._wake.notify()
            thread.join(timeout)
            self._thread = None
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            try:
                self.store_pending()
            except DatabaseError:
                logger.warning("access log: the database is away; %d reads wait", len(self._pending), exc_info=True)
                connection.close()
                time.sleep(1)
        if self._pending:
            logger.error("access log: %d reads could not be stored before the process ended", len(self._pending))
        connection.close()


def _store(batch: list[dict[str, Any]]) -> int:
    items: list[EventIn] = []
    for raw in batch:
        try:
            items.append(parse_event(raw))
        except ProblemError:  # a record of ours that cannot be stored: say so, do not retry it
            READS_UNRECORDED.inc()
            logger.exception("access log: a read record was refused: %s", raw.get("description"))
    if not items:
        return 0
    outcomes = ingest_each(source=service_source(), items=items)
    for outcome in outcomes:
        if isinstance(outcome, ProblemError):
            READS_UNRECORDED.inc()
            logger.error("access log: a read record was refused: %s", outcome.errors)
    return sum(1 for outcome in outcomes if not isinstance(outcome, ProblemError))


_recorder = _Recorder()

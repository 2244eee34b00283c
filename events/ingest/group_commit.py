"""Group commit: concurrent single-event requests of one worker share one transaction.

A request thread hands its validated event to the worker's committer thread and waits. The
committer takes every event that has gathered meanwhile, stores them through ingest_events
in one transaction per source (one COPY or INSERT, idempotency claims included), commits,
and only then answers each waiter: nothing is acknowledged before its commit. An event the
write path refuses (a 409 on a reused key, an identity of another customer) is answered
alone and the others are stored again without it, so one bad event never fails the group.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from itertools import groupby

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

from auditsvc.errors import ProblemError
from events.ingest.validation import EventIn
from events.ingest.write import ingest_each, ingest_events
from events.models import Source
from events.queries import StoredEvent

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Waiter:
    source: Source
    item: EventIn
    done: threading.Event = field(default_factory=threading.Event)
    result: StoredEvent | None = None
    error: BaseException | None = None

    def answer(self, result: StoredEvent | None = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


class GroupCommitter:
    """One per worker process; its thread starts with the first event (after gunicorn forks)."""

    def __init__(self, *, max_group: int) -> None:
        self.max_group = max_group
        self._queue: queue.SimpleQueue[_Waiter | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def store(self, *, source: Source, item: EventIn, timeout: float) -> StoredEvent:
        """Store one event in the next group; raise what the write path raised for it."""
        self._ensure_running()
        waiter = _Waiter(source, item)
        self._queue.put(waiter)
        if not waiter.done.wait(timeout):
            # Not answered in time: it may still commit, as after a timeout on the wire; the
            # client's retry with the same idempotency key is safe either way.
            raise TimeoutError("the group commit did not answer in time")
        if waiter.error is not None:
            raise waiter.error
        assert waiter.result is not None
        return waiter.result

    def _ensure_running(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Commit what has gathered, then end the thread and close its connection."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                connection.close()
                return
            group = [first]
            while len(group) < self.max_group:
                try:
                    waiter = self._queue.get_nowait()
                except queue.Empty:
                    break
                if waiter is None:  # stop() after this group
                    self._queue.put(None)
                    break
                group.append(waiter)
            try:
                self._commit(group)
            except BaseException as exc:  # the thread must answer every waiter, whatever happens
                logger.exception("group commit failed")
                for waiter in group:
                    if not waiter.done.is_set():
                        waiter.answer(error=exc)
                # A broken connection is not reused by the next group. (A healthy one is kept,
                # without the per-request health check: it would cost a round trip a group.)
                connection.close()

    def _commit(self, group: list[_Waiter]) -> None:
        for _, same_source in groupby(sorted(group, key=lambda w: w.source.pk), key=lambda w: w.source.pk):
            for round_ in _rounds(list(same_source)):
                _store_group(round_)


def _rounds(waiters: list[_Waiter]) -> list[list[_Waiter]]:
    """Waiters split so that no idempotency key appears twice in one transaction: the second
    request with a key (a client's retry racing its first try) is stored after the first, as
    if they had come one after the other, and is answered as a repeat (or a 409)."""
    rounds: list[list[_Waiter]] = []
    seen: dict[str, int] = {}
    for waiter in waiters:
        key = waiter.item.idempotency_key
        index = 0 if key is None else seen.get(key, -1) + 1
        if key is not None:
            seen[key] = index
        while len(rounds) <= index:
            rounds.append([])
        rounds[index].append(waiter)
    return rounds


def _store_group(waiters: list[_Waiter]) -> None:
    """Store waiters (one source) in one transaction; a refused one is answered with its own
    error and the rest are stored without it (ingest_each). An unexpected error stores the
    group one by one, so that it reaches only the request that caused it."""
    try:
        outcomes = ingest_each(source=waiters[0].source, items=[w.item for w in waiters])
    except (OperationalError, InterfaceError):
        raise  # the database's, not one event's: every waiter is answered 503 (one by one would wait n times)
    except Exception:
        if len(waiters) == 1:
            raise
        logger.exception("group commit of %d events failed: storing them one by one", len(waiters))
        for waiter in waiters:
            try:
                _store_group([waiter])
            except Exception as exc:  # its own failure, answered to it alone
                waiter.answer(error=exc)
                connection.close_if_unusable_or_obsolete()  # a broken one is not reused
        return
    for waiter, outcome in zip(waiters, outcomes, strict=True):
        if isinstance(outcome, ProblemError):
            waiter.answer(error=outcome)
        else:
            waiter.answer(outcome)


_committer: GroupCommitter | None = None
_committer_lock = threading.Lock()


def stop_group_commit() -> None:
    """End this process's committer once what it holds is committed (tests, worker exit)."""
    if _committer is not None:
        _committer.stop()


def store_single_event(*, source: Source, item: EventIn) -> StoredEvent:
    """The write path of one event from an API request: in the worker's next group when
    AUDITSVC_GROUP_COMMIT is on and the caller is outside any transaction, else on its own.

    Inside a transaction (a caller that must see or roll back the event with its own work,
    or a test) the event is written in that transaction, as ingest_events always does.
    """
    if not settings.AUDITSVC_GROUP_COMMIT or connection.in_atomic_block:
        return store_in_callers_transaction(source=source, item=item)
    global _committer  # noqa: PLW0603 - one committer per worker process
    with _committer_lock:
        if _committer is None:
            _committer = GroupCommitter(max_group=settings.AUDITSVC_GROUP_COMMIT_MAX_EVENTS)
    return _committer.store(source=source, item=item, timeout=settings.AUDITSVC_GROUP_COMMIT_TIMEOUT_SECONDS)


def store_in_callers_transaction(*, source: Source, item: EventIn) -> StoredEvent:
    """The one event in the caller's transaction, not the committer's (the ingest tests refuse
    this path: they must take production's, tests/conftest.py production_write_path)."""
    return ingest_events(source=source, items=[item], is_batch=False).events[0]

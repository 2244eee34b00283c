"""The stream's consumer: entries from the Redis stream into PostgreSQL, stored exactly once.

A drainer is one consumer of the group "drainers" on each shard it serves. It reads a batch,
stores it through the one write path (ingest_each: COPY, an entry's preset id and its
idempotency key make a redelivery a repeat, never a second row), commits, and only then
acknowledges. While PostgreSQL is down it keeps the batch and retries; it never acknowledges
what it did not store. Entries a crashed drainer left unacknowledged are claimed again after
AUDITSVC_STREAM_CLAIM_IDLE_SECONDS (XAUTOCLAIM). An entry the write path refuses, or one that
failed AUDITSVC_STREAM_MAX_DELIVERIES times, is moved to the shard's dead-letter stream with
the reason; nothing is dropped. The stream is trimmed below what every group acknowledged.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

from auditsvc.errors import ProblemError
from events.ingest import stream
from events.ingest.validation import EventIn
from events.ingest.write import ingest_each
from events.models import Source

logger = logging.getLogger(__name__)

# Acknowledge stored entries and move refused ones to the dead-letter stream, in one step.
# KEYS: stream, queued hash, dead-letter stream, forged counter. ARGV: group, then JSON lists of
# the entry ids to acknowledge, the event ids no longer queued, and the dead letters
# [entry, reason, entry id, deliveries, MAC]; then how many of those had no valid MAC.
_ACKNOWLEDGE = """
local acked = cjson.decode(ARGV[2])
local gone = cjson.decode(ARGV[3])
local dead = cjson.decode(ARGV[4])
for _, letter in ipairs(dead) do
  redis.call('XADD', KEYS[3], '*', 'e', letter[1], 'm', letter[5], 'reason', letter[2], 'entry_id', letter[3],
             'deliveries', letter[4])
end
for i = 1, #acked, 500 do
  redis.call('XACK', KEYS[1], ARGV[1], unpack(acked, i, math.min(i + 499, #acked)))
end
for i = 1, #gone, 500 do
  redis.call('HDEL', KEYS[2], unpack(gone, i, math.min(i + 499, #gone)))
end
if tonumber(ARGV[5]) > 0 then redis.call('INCRBY', KEYS[4], ARGV[5]) end
return #acked
"""
BAD_MAC = "bad_mac: the entry's MAC is missing or wrong; this service's API did not write it (docs/ingest-modes.md)"
_IDLE_CONSUMER_MS = 3600 * 1000  # a consumer with nothing pending, idle this long, is removed


@dataclass
class DrainReport:
    stored: int = 0
    duplicates: int = 0  # redeliveries and retries found already stored
    dead: int = 0

    def add(self, other: DrainReport) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.dead += other.dead


class Stopping(Exception):
    """Raised inside a retry wait when the drainer is asked to stop; the batch stays pending."""


@dataclass
class _Entry:
    entry_id: str
    text: str
    mac: str | None
    deliveries: int
    source_id: int | None = None
    item: EventIn | None = None
    failed: bool = False  # neither stored nor dead: left unacknowledged


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Drainer:
    def __init__(
        self,
        shards: list[int] | None = None,
        *,
        consumer: str | None = None,
        batch: int | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.shards = stream.shards_to_drain() if shards is None else shards
        self.consumer = consumer or default_consumer_name()
        self.batch = batch or settings.AUDITSVC_STREAM_BATCH
        self.stop = stop or threading.Event()
        self.claim_idle_ms = settings.AUDITSVC_STREAM_CLAIM_IDLE_SECONDS * 1000
        self.max_deliveries = settings.AUDITSVC_STREAM_MAX_DELIVERIES
        self._sources: dict[int, Source] = {}
        self._acknowledge = stream.client().register_script(_ACKNOWLEDGE)
        self._own_pending_read: set[int] = set()
        self._last_cleanup: dict[int, float] = {}  # shard → when its idle consumers were last removed

    def run(self, *, once: bool = False, on_batch: Callable[[DrainReport], None] | None = None) -> DrainReport:
        """Drain until stopped (or, with once, until every served shard has nothing left to read)."""
        stream.ensure_groups(self.shards)
        total = DrainReport()
        block_ms = 0 if once else max(10, 500 // max(1, len(self.shards)))
        while not self.stop.is_set():
            moved = 0
            for shard in self.shards:
                try:
                    report = self.drain_shard(shard, block_ms=block_ms)
                except Stopping:
                    return total
                except Exception:
                    # Left unacknowledged: claimed again after the idle time, its delivery counted.
                    logger.exception("draining shard %d failed; its entries will be delivered again", shard)
                    self.stop.wait(1)
                    continue
                moved += report.stored + report.duplicates + report.dead
                total.add(report)
                if on_batch is not None and (report.stored or report.duplicates or report.dead):
                    on_batch(report)
            if once and not moved:
                break
        return total

    def drain_shard(self, shard: int, *, block_ms: int = 0) -> DrainReport:
        """One step on one shard: this consumer's own pending entries (after a restart under the
        same name), then entries abandoned by others, then new ones."""
        report = DrainReport()
        redis_client = stream.client()
        key = stream.stream_key(shard)
        if shard not in self._own_pending_read:
            own = redis_client.xreadgroup(stream.GROUP, self.consumer, {key: "0"}, count=self.batch)
            entries = _entries(own)
            if entries:
                report.add(self._handle(shard, entries, redelivered=True))
                return report
            self._own_pending_read.add(shard)
        claimed = redis_client.xautoclaim(key, stream.GROUP, self.consumer, self.claim_idle_ms, "0-0", count=self.batch)
        if claimed[1]:
            report.add(self._handle(shard, [(entry_id, fields) for entry_id, fields in claimed[1]], redelivered=True))
            return report
        fresh = redis_client.xreadgroup(
            stream.GROUP, self.consumer, {key: ">"}, count=self.batch, block=block_ms or None
        )
        entries = _entries(fresh)
        if entries:
            report.add(self._handle(shard, entries, redelivered=False))
        self._cleanup(shard)
        return report

    def _handle(self, shard: int, raw: list[tuple[str, dict[str, str]]], *, redelivered: bool) -> DrainReport:
        deliveries = self._deliveries(shard, raw) if redelivered else {}
        entries = [
            _Entry(entry_id, fields.get("e", ""), fields.get("m"), deliveries.get(entry_id, 1))
            for entry_id, fields in raw
        ]
        report = DrainReport()
        dead: list[tuple[_Entry, str]] = []
        for entry in entries:
            if not stream.mac_matches(entry.text, entry.mac):
                logger.warning("stream entry %s has no valid MAC: dead-lettered, not stored", entry.entry_id)
                dead.append((entry, BAD_MAC))
                continue
            try:
                entry.source_id, entry.item = stream.decode_entry(entry.text)
            except (ValueError, KeyError, TypeError) as exc:
                dead.append((entry, f"undecodable: {exc}"))
        readable = [entry for entry in entries if entry.item is not None]
        by_source: dict[int, list[_Entry]] = defaultdict(list)
        for entry in readable:
            assert entry.source_id is not None
            by_source[entry.source_id].append(entry)
        sources = self._until_committed(lambda: self._load_sources(set(by_source)))
        for source_id, group in by_source.items():
            source = sources.get(source_id)
            if source is None:
                dead.extend((entry, f"unknown_source: no source with id {source_id}") for entry in group)
                continue
            self._store(source, group, report, dead)
        self._finish(shard, entries, dead)
        report.dead += len(dead)
        return report

    def _store(self, source: Source, part: list[_Entry], report: DrainReport, dead: list[tuple[_Entry, str]]) -> None:
        items = [entry.item for entry in part if entry.item is not None]
        try:
            outcomes = self._until_committed(lambda: ingest_each(source=source, items=items))
        except Stopping:
            raise
        except Exception as exc:
            if len(part) > 1:  # one entry may be what fails: find it by storing each alone
                for entry in part:
                    self._store(source, [entry], report, dead)
                return
            entry = part[0]
            if entry.deliveries >= self.max_deliveries:
                logger.exception("entry %s failed %d times: dead-lettered", entry.entry_id, entry.deliveries)
                dead.append((entry, f"failed {entry.deliveries} times: {type(exc).__name__}: {exc}"))
                return
            # Not acknowledged: claimed again after the idle time (by this or another drainer)
            # and counted, until it is stored or dead-lettered.
            logger.exception(
                "entry %s failed (delivery %d); it will be delivered again", entry.entry_id, entry.deliveries
            )
            entry.failed = True
            return
        for entry, outcome in zip(part, outcomes, strict=True):
            if isinstance(outcome, ProblemError):
                errors = [error.as_dict() for error in outcome.errors]
                dead.append((entry, orjson.dumps({"status": outcome.status, "errors": errors}).decode()))
            elif outcome.created:
                report.stored += 1
            else:
                report.duplicates += 1

    def _until_committed(self, work: Callable[[], Any]) -> Any:
        """work(), retried while PostgreSQL is unreachable (the entries wait, unacknowledged)."""
        delay = 0.2
        while True:
            try:
                return work()
            except (OperationalError, InterfaceError) as exc:
                logger.warning("database unavailable, retrying in %.1f s: %s", delay, str(exc).splitlines()[:1])
                connection.close()
                if self.stop.wait(delay):
                    raise Stopping from exc
                delay = min(delay * 2, 5.0)

    def _load_sources(self, wanted: set[int]) -> dict[int, Source]:
        missing = wanted - set(self._sources)
        if missing:
            self._sources.update(Source.objects.in_bulk(missing))
        return {source_id: self._sources[source_id] for source_id in wanted if source_id in self._sources}

    def _deliveries(self, shard: int, raw: list[tuple[str, dict[str, str]]]) -> dict[str, int]:
        ids = [entry_id for entry_id, _ in raw]
        pending = stream.client().xpending_range(
            stream.stream_key(shard), stream.GROUP, min=ids[0], max=ids[-1], count=len(ids) * 2,
            consumername=self.consumer,
        )  # fmt: skip
        return {row["message_id"]: int(row["times_delivered"]) for row in pending}

    def _finish(self, shard: int, entries: list[_Entry], dead: list[tuple[_Entry, str]]) -> None:
        """Acknowledge every handled entry (stored, or now a dead letter), then trim."""
        entries = [entry for entry in entries if not entry.failed]
        keys = [stream.stream_key(shard), stream.queued_key(shard), stream.dead_key(shard), stream.forged_key(shard)]
        letters = [[entry.text, reason, entry.entry_id, entry.deliveries, entry.mac or ""] for entry, reason in dead]
        event_ids = [str(entry.item.event_id) for entry in entries if entry.item is not None]
        args: list[str | bytes] = [
            stream.GROUP,
            orjson.dumps([entry.entry_id for entry in entries]),
            orjson.dumps(event_ids),
            orjson.dumps(letters),
            str(sum(reason == BAD_MAC for _, reason in dead)),
        ]
        self._acknowledge(keys=keys, args=args)
        trim_acknowledged(shard)

    def _cleanup(self, shard: int) -> None:
        """Remove consumers long idle with nothing pending (drainers that exited), once a minute."""
        if time.monotonic() - self._last_cleanup.get(shard, 0.0) < 60:
            return
        self._last_cleanup[shard] = time.monotonic()
        key = stream.stream_key(shard)
        for consumer in stream.client().xinfo_consumers(key, stream.GROUP):
            if consumer["name"] != self.consumer and not consumer["pending"] and consumer["idle"] > _IDLE_CONSUMER_MS:
                stream.client().xgroup_delconsumer(key, stream.GROUP, consumer["name"])


def _entries(answer: Any) -> list[tuple[str, dict[str, str]]]:
    """XREADGROUP's answer for one stream as (entry id, fields); RESP2 lists or RESP3 dicts."""
    if not answer:
        return []
    streams = answer.items() if isinstance(answer, dict) else answer
    return [(entry_id, fields) for _, messages in streams for entry_id, fields in (messages or []) if fields]


def _id_order(entry_id: str) -> tuple[int, int]:
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


def trim_acknowledged(shard: int) -> None:
    """Trim the shard's stream below the oldest entry some group has not acknowledged (or not
    yet read): a group other than the drainers' (a forwarder, say) keeps its entries too."""
    redis_client = stream.client()
    key = stream.stream_key(shard)
    floors = []
    for group in redis_client.xinfo_groups(key):
        millis, sequence = _id_order(group["last-delivered-id"])
        after_delivered = f"{millis}-{sequence + 1}"
        # The oldest unacknowledged entry; none left (another drainer acknowledged the last one
        # since XINFO answered): then everything the group had read by then.
        oldest_pending = redis_client.xpending(key, group["name"])["min"] if int(group["pending"]) else None
        floors.append(oldest_pending or after_delivered)
    if floors:
        redis_client.xtrim(key, minid=min(floors, key=_id_order), approximate=False)

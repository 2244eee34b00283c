"""Stream mode (AUDITSVC_INGEST_MODE=stream): a durable Redis stream between the API and PostgreSQL.

A single-event POST is validated, given its id (UUIDv7), receipt time and hash, and appended
to a Redis stream in one script that also holds its idempotency key; it is answered 202 once
Redis has the append on disk (the start-up check demands `appendfsync always`, see
durability_problem). `manage.py drain_events` (events.ingest.drain) stores the entries
through the one write path and acknowledges them only after the commit.

Layout, per shard n (AUDITSVC_STREAM_SHARDS), every key under one hash tag so that a shard's
keys live in one Redis Cluster slot and one script may touch them all:
  {prefix}:{sN}:events  the stream (fields "e": the entry's JSON, "m": its MAC, see entry_mac)
  {prefix}:{sN}:queued-sources  event ids accepted and not yet stored, to their source (reads answer `queued`)
  {prefix}:{sN}:dead    the dead-letter stream (entries the write path refused, or that failed
                        AUDITSVC_STREAM_MAX_DELIVERIES times); the admin shows it
  {prefix}:{sN}:forged  how many entries the drainers refused for a missing or wrong MAC (a metric)
  {prefix}:{sN}:key:<source id>:<idempotency key>  "<event id> <fingerprint>", for the dedupe window
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson
import redis
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from auditsvc import metrics
from auditsvc.errors import Conflict, Unavailable
from events import privacy_generation
from events.ids import uuid7
from events.ingest.grouped_append import StreamAppender
from events.ingest.idempotency import key_conflict
from events.ingest.validation import EventIn, ItemPaths
from events.ingest.write import checked_and_protected, hash_for
from events.models import Source

GROUP = "drainers"
# redis.Redis or RedisCluster. Typed Any: redis-py types every answer as "value or Awaitable"
# (one class serves sync and async), which would need a cast at each of the calls below.
Client = Any

# Append the entry, remember its id (and its source) as queued and claim its idempotency key, or
# answer with the event that already holds the key; but first, refuse the entry if it was checked
# under an older privacy generation than the shard's copy (a registration or erasure announced it
# since): {2, the shard's generation}. A newer one is copied to the shard (announcing is also
# done by every worker that has seen it). Returns {1, length, oldest entry id} or {0, held}.
# KEYS: stream, queued hash, generation, [idempotency key]; ARGV[7]: the entry's generation.
_ACCEPT = """
local current = redis.call('GET', KEYS[3])
local checked = tonumber(ARGV[7])
if current and tonumber(current) > checked then return {2, current} end
if not current or tonumber(current) < checked then redis.call('SET', KEYS[3], ARGV[7]) end
if KEYS[4] then
  local held = redis.call('GET', KEYS[4])
  if held then return {0, held} end
end
redis.call('XADD', KEYS[1], '*', 'e', ARGV[2], 'm', ARGV[5])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[6])
if KEYS[4] then redis.call('SET', KEYS[4], ARGV[1] .. ' ' .. ARGV[3], 'EX', ARGV[4]) end
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
return {1, redis.call('XLEN', KEYS[1]), oldest[1][1]}
"""
# Raise a shard's copy of the privacy generation to ARGV[1] (never lower it).
_ANNOUNCE = """
local current = redis.call('GET', KEYS[1])
if not current or tonumber(current) < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""
_ACCEPT_TRIES = 3  # a generation moving under the accept this often in a row: 503, retry later
# Grouped appends (events.ingest.grouped_append): a pipeline carries at most this many accepts (a
# gthread worker has 8 threads, so groups stay smaller); a caller waits at most this long for its
# reply, beyond redis-py's own bound of a round trip (5 s socket timeout, 3 retries with backoff).
_GROUP_MAX_APPENDS = 64
_GROUP_WAIT_SECONDS = 60.0

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lag:
    """What is accepted and not yet stored: entries, and the age of the oldest."""

    entries: int
    oldest_seconds: float

    def as_dict(self) -> dict[str, float]:
        return {"entries": self.entries, "oldest_seconds": round(self.oldest_seconds, 3)}


@dataclass(frozen=True)
class Accepted:
    event_id: uuid.UUID
    received_at: datetime | None  # None for a repeat: the first acceptance's is not kept here
    hash: str | None
    created: bool  # False: a retry of an accepted event (same idempotency key and body)
    lag: Lag | None  # of the event's shard, right after the append


def is_enabled() -> bool:
    return bool(settings.AUDITSVC_INGEST_MODE == "stream")


@cache
def client() -> Client:
    """The process's Redis (or Redis Cluster) client; redis-py reconnects after a fork."""
    options: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 2, "decode_responses": True}
    if settings.AUDITSVC_STREAM_CLUSTER:
        return RedisCluster.from_url(settings.AUDITSVC_STREAM_URL, **options)  # type: ignore[no-untyped-call]
    return redis.Redis.from_url(settings.AUDITSVC_STREAM_URL, **options)


def forget_client() -> None:
    """Drop the cached client (tests that point the settings at another Redis)."""
    if client.cache_info().currsize:
        client().close()
    client.cache_clear()
    _accept_script.cache_clear()
    _mac_key.cache_clear()
    _forget_appender()


@cache
def _accept_script() -> Any:
    return client().register_script(_ACCEPT)


_appender: StreamAppender | None = None
_appender_lock = threading.Lock()


def _forget_appender() -> None:
    global _appender  # noqa: PLW0603 - one appender per process and client
    _appender = None


def _after_fork_in_child() -> None:
    """A forked worker makes its own appender (and lock: a thread of the parent may have held it)."""
    global _appender_lock  # noqa: PLW0603
    _appender_lock = threading.Lock()
    _forget_appender()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _grouped_appender() -> StreamAppender | None:
    """The process's appender, or None for one round trip per accept: when switched off, and on a
    Redis Cluster, where a pipeline of one client spans nodes and redis-py's ClusterPipeline
    retries and redirects entries on its own; not proven here to answer each caller soundly."""
    global _appender  # noqa: PLW0603
    if not settings.AUDITSVC_STREAM_GROUPED_APPENDS or settings.AUDITSVC_STREAM_CLUSTER:
        return None
    if _appender is None:
        with _appender_lock:
            if _appender is None:
                _appender = StreamAppender(client=client(), script=_accept_script(), max_group=_GROUP_MAX_APPENDS,
                                           wait_seconds=_GROUP_WAIT_SECONDS)  # fmt: skip
    return _appender


def _run_accept(keys: list[Any], args: list[Any]) -> Any:
    """The accept script's reply for one entry: in the worker's next grouped pipeline, or alone."""
    appender = _grouped_appender()
    if appender is None:
        return _accept_script()(keys=keys, args=args)
    try:
        return appender.call(keys=keys, args=args)
    except TimeoutError as exc:  # no reply in time: nothing acknowledged, a 503 as for Redis's own timeout
        raise redis.TimeoutError(str(exc)) from exc


def stream_unavailable() -> Unavailable:
    """The API's 503 for a stream Redis that did not answer (never for the cache's: see
    auditsvc.api.throttling)."""
    return Unavailable("stream_unavailable", "The ingest stream is unavailable; retry shortly.")


def shard_count() -> int:
    return int(settings.AUDITSVC_STREAM_SHARDS)


def _base(shard: int) -> str:
    return f"{settings.AUDITSVC_STREAM_PREFIX}:{{s{shard}}}"


def stream_key(shard: int) -> str:
    return f"{_base(shard)}:events"


def queued_key(shard: int) -> str:
    """A hash of the queued event ids to their source's pk: a `read:own` key is told that an id
    is queued only when it is its own source's."""
    return f"{_base(shard)}:queued-sources"


def dead_key(shard: int) -> str:
    return f"{_base(shard)}:dead"


def forged_key(shard: int) -> str:
    return f"{_base(shard)}:forged"


def generation_key(shard: int) -> str:
    """The shard's copy of the privacy generation (events.privacy_generation), for the accept's script."""
    return f"{_base(shard)}:privacy-generation"


def _idempotency_key(shard: int, source: Source, key: str) -> str:
    return f"{_base(shard)}:key:{source.pk}:{key}"


def shard_of(source: Source, item: EventIn, event_id: uuid.UUID) -> int:
    """A keyed event's shard follows its key (a retry meets its first try); others spread by id."""
    if shard_count() == 1:
        return 0
    basis = f"{source.pk}:{item.idempotency_key}".encode() if item.idempotency_key else event_id.bytes
    return zlib.crc32(basis) % shard_count()


def entry_age_seconds(entry_id: str, now: float | None = None) -> float:
    """An entry id is "<milliseconds>-<sequence>": its age from the Redis clock's stamp."""
    millis = int(entry_id.split("-", 1)[0])
    return max(0.0, (now if now is not None else time.time()) - millis / 1000)


def accept_event(*, source: Source, item: EventIn) -> Accepted:
    """Append one validated event to its shard; durable when this returns (see durability_problem).

    Raises Conflict when the idempotency key is held by a different event, and Unavailable
    (`stream_unavailable`) when Redis is unreachable (the API answers 503; nothing was
    acknowledged). Checked against its schema and protected first, as the write path would
    (InvalidInput then): the hash the answer carries covers the stored form, and the entry
    carries the check for the drainer to record.
    """
    sent = item
    for attempt in range(_ACCEPT_TRIES):
        generation = _generation_for_accept(fresh=attempt > 0)
        received_at = timezone.now()
        event_id = uuid7(received_at)  # first: the ciphertexts are bound to it; of its receipt
        try:
            [item], [check] = checked_and_protected(
                [sent], ItemPaths(is_batch=False), source=source, event_ids=[event_id], generation=generation
            )
        except (OperationalError, InterfaceError) as exc:
            raise schema_unavailable(sent.type) from exc
        item = replace(item, checked_version=check.version, checked_valid=check.valid)
        id_text = str(event_id)
        digest = hash_for(source=source, item=item, event_id=id_text, received_at=received_at)
        entry = encode_entry(source=source, item=item, event_id=id_text, received_at=received_at, digest=digest)
        shard = shard_of(source, item, event_id)
        keys = [stream_key(shard), queued_key(shard), generation_key(shard)]
        if item.idempotency_key is not None:
            keys.append(_idempotency_key(shard, source, item.idempotency_key))
        args = [id_text, entry, item.fingerprint, settings.AUDITSVC_IDEMPOTENCY_WINDOW_SECONDS, entry_mac(entry),
                source.pk, generation]  # fmt: skip
        try:
            answer = _run_accept(keys, args)
        except (redis.RedisError, RedisClusterException) as exc:
            raise stream_unavailable() from exc
        if int(answer[0]) != 2:
            break
        # Checked under a generation older than one announced: check again under the database's.
    else:
        raise schema_unavailable(sent.type)
    if int(answer[0]) == 0:
        held_id, _, fingerprint = str(answer[1]).partition(" ")
        if fingerprint not in (item.fingerprint, item.legacy_fingerprint):  # legacy: held since before keying
            raise Conflict([key_conflict("idempotency_key")])
        return Accepted(uuid.UUID(held_id), received_at=None, hash=None, created=False, lag=None)
    lag = Lag(entries=int(answer[1]), oldest_seconds=entry_age_seconds(str(answer[2])))
    return Accepted(event_id, received_at=received_at, hash=digest, created=True, lag=lag)


def schema_unavailable(type_name: str) -> Unavailable:
    """The 503 for an event this worker cannot check and protect as the schemas now in force say:
    the database is away and the worker holds no checker for the type of the generation the
    stream confirms (a fresh worker holds none). Never accepted unchecked: its marked fields
    would reach the table plain."""
    message = f"The database is unavailable to check and protect events of type {type_name}; retry shortly."
    return Unavailable("schema_unavailable", message)


def _generation_for_accept(*, fresh: bool) -> int:
    """The generation to check an event under: the one this worker last saw committed (read again
    when old, or when fresh is asked: the stream announced a newer one). While the database is
    away, the last one seen serves: the accept's script refuses it if a newer one was announced."""
    try:
        return privacy_generation.read_generation() if fresh else privacy_generation.known_generation()
    except (OperationalError, InterfaceError) as exc:
        privacy_generation.read_again_soon()
        last = privacy_generation.last_known_generation()
        if fresh or last is None:
            raise Unavailable(
                "schema_unavailable", "The database is unavailable to look up the schemas in force; retry shortly."
            ) from exc
        return last


def announce_generation(generation: int) -> None:
    """Tell every shard's accept that generation is in force (a registration or an erasure, after
    its commit and before it is answered): from then on no event checked under an older one is
    accepted. Unavailable (`stream_unavailable`) when Redis does not answer: the change is
    committed but not yet in force for the stream; the caller answers 503 and the retry announces
    again. A no-op in direct mode."""
    if not is_enabled():
        return
    try:
        script = client().register_script(_ANNOUNCE)
        for shard in range(shard_count()):
            script(keys=[generation_key(shard)], args=[generation])
    except (redis.RedisError, RedisClusterException) as exc:
        raise stream_unavailable() from exc


def encode_entry(*, source: Source, item: EventIn, event_id: str, received_at: datetime, digest: str) -> bytes:
    """The entry's JSON: the event as validated, with what the API assigned (id, receipt, hash)."""
    return orjson.dumps(
        {
            "id": event_id,
            "source": source.pk,
            "received_at": received_at,
            "type": item.type,
            "customer": item.customer,
            "identities": item.customer_identities,
            "actor": item.actor,
            "occurred_at": item.occurred_at,
            "description": item.description,
            "payload": item.payload,
            "idempotency_key": item.idempotency_key,
            "fingerprint": item.fingerprint,
            "canonical": item.payload_is_canonical,
            "hash": digest,
            "origin": item.origin,
            "checked": [item.checked_version, item.checked_valid],
        }
    )


@cache
def _mac_key() -> bytes:
    if settings.AUDITSVC_STREAM_KEY:
        return str(settings.AUDITSVC_STREAM_KEY).encode()
    return hmac.new(str(settings.SECRET_KEY).encode(), b"auditsvc stream entries", hashlib.sha256).digest()


def entry_mac(entry: bytes | str) -> str:
    """HMAC-SHA256 of an entry's JSON under the service's stream key: the drainer stores only
    entries that this service's API wrote, however else the Redis may be written to."""
    data = entry.encode() if isinstance(entry, str) else entry
    return hmac.new(_mac_key(), data, hashlib.sha256).hexdigest()


def mac_matches(entry: str, mac: str | None) -> bool:
    return mac is not None and hmac.compare_digest(entry_mac(entry), mac)


def decode_entry(text: str) -> tuple[int, EventIn]:
    """(source id, the event as the write path takes it: id and receipt time preset, like an
    import's, so that a redelivered entry is recognised by its id and never stored twice)."""
    raw = orjson.loads(text)
    checked_version, checked_valid = raw.get("checked") or (None, None)  # none in entries of before
    return int(raw["source"]), EventIn(
        type=raw["type"],
        customer=raw["customer"],
        customer_identities=tuple((system, external) for system, external in raw["identities"]),
        actor=raw["actor"],
        occurred_at=datetime.fromisoformat(raw["occurred_at"]) if raw["occurred_at"] else None,
        description=raw["description"],
        payload=raw["payload"],
        idempotency_key=raw["idempotency_key"],
        fingerprint=raw["fingerprint"],
        payload_is_canonical=bool(raw["canonical"]),
        event_id=uuid.UUID(raw["id"]),
        received_at=datetime.fromisoformat(raw["received_at"]),
        hash=raw["hash"],
        origin=raw.get("origin"),  # entries written before origins existed have none
        checked_version=checked_version,
        checked_valid=checked_valid,
    )


def queued_source(event_id: uuid.UUID) -> int | None:
    """The pk of the source whose accepted event_id still waits for the drainer, or None (one
    check per shard); Unavailable when Redis does not answer."""
    text = str(event_id)
    try:
        for shard in range(shard_count()):
            source = client().hget(queued_key(shard), text)
            if source is not None:
                return int(source)
    except (redis.RedisError, RedisClusterException) as exc:
        raise stream_unavailable() from exc
    return None


def ensure_groups(shards: list[int] | None = None) -> None:
    """Create the drainers' consumer group on every shard (or those given), reading from the stream's start."""
    for shard in range(shard_count()) if shards is None else shards:
        try:
            client().xgroup_create(stream_key(shard), GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


@dataclass(frozen=True)
class ShardState:
    shard: int
    entries: int  # accepted, not yet stored and acknowledged (the drainer trims what is)
    oldest_seconds: float
    pending: int  # delivered to a drainer, not yet acknowledged
    dead: int
    forged: int = 0  # refused for a missing or wrong MAC, ever


def shard_states(shards: list[int] | None = None) -> list[ShardState]:
    """Each shard's lag and dead letters (of those in use, or those given): for /readyz and the
    admin (one round trip a shard)."""
    states = []
    now = time.time()
    for shard in range(shard_count()) if shards is None else shards:
        key = stream_key(shard)
        pipe = client().pipeline(transaction=False)
        pipe.xrange(key, count=1).xlen(key).xlen(dead_key(shard)).get(forged_key(shard)).xinfo_groups(key)
        oldest, entries, dead, forged, groups = pipe.execute(raise_on_error=False)
        if isinstance(groups, redis.ResponseError):  # no stream yet: nothing accepted, no drainer
            groups = []
        states.append(
            ShardState(
                shard=shard,
                entries=int(entries),
                oldest_seconds=entry_age_seconds(oldest[0][0], now) if oldest else 0.0,
                pending=sum(int(group["pending"]) for group in groups if group["name"] == GROUP),
                dead=int(dead),
                forged=int(forged or 0),
            )
        )
    return states


def total_lag(states: list[ShardState]) -> Lag:
    return Lag(
        entries=sum(state.entries for state in states),
        oldest_seconds=max((state.oldest_seconds for state in states), default=0.0),
    )


# --- Streams left behind ------------------------------------------------------------------


def stranded_streams() -> dict[int, int]:
    """{shard: entries} of the shards whose stream holds accepted entries that this configuration
    does not drain: those at or beyond AUDITSVC_STREAM_SHARDS (after it was lowered), or every
    shard in direct mode (after a switch back from stream mode)."""
    in_use = shard_count() if is_enabled() else 0
    prefix = settings.AUDITSVC_STREAM_PREFIX
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + ":{s*}:events"
    found = {}
    for key in client().scan_iter(match=pattern, count=1000):
        match = re.fullmatch(re.escape(prefix) + r":\{s(\d+)\}:events", key)
        if match and int(match[1]) >= in_use and (entries := int(client().xlen(key))):
            found[int(match[1])] = entries
    return dict(sorted(found.items()))


def shards_to_drain() -> list[int]:
    """The shards in use and any stranded one: a drainer started now empties them all."""
    in_use = range(shard_count()) if is_enabled() else range(0)
    return sorted(set(in_use) | set(stranded_streams()))


def stranded_problem() -> str | None:
    """Why the API must not start, or None: 202-acknowledged entries wait where no drainer of
    this configuration looks. In direct mode an unreachable Redis is no reason (nothing needs it)."""
    if not settings.AUDITSVC_STREAM_URL:
        return None
    try:
        stranded = stranded_streams()
    except redis.RedisError as exc:
        if is_enabled():
            return f"auditsvc: the stream's Redis at AUDITSVC_STREAM_URL cannot be checked: {exc}"
        return None
    if not stranded:
        return None
    named = ", ".join(f"{stream_key(shard)} ({entries} entries)" for shard, entries in stranded.items())
    configured = f"AUDITSVC_STREAM_SHARDS={shard_count()}" if is_enabled() else "direct mode"
    return (
        f"auditsvc: {named} hold accepted events that nothing drains in this configuration ({configured}). "
        "Run `python manage.py drain_events --once` (it empties them), then start again."
    )


# --- Durability ---------------------------------------------------------------------------


def _primaries() -> list[Client]:
    redis_client = client()
    if isinstance(redis_client, RedisCluster):
        return [redis_client.get_redis_connection(node) for node in redis_client.get_primaries()]  # type: ignore[no-untyped-call]
    return [redis_client]


def persistence() -> list[dict[str, str]]:
    """appendonly and appendfsync of every primary (CONFIG GET; a managed Redis may refuse it)."""
    found = []
    for node in _primaries():
        values = node.config_get("append*")
        kwargs = node.connection_pool.connection_kwargs
        found.append(
            {
                "node": f"{kwargs.get('host')}:{kwargs.get('port')}",
                "appendonly": str(values.get("appendonly", "")),
                "appendfsync": str(values.get("appendfsync", "")),
            }
        )
    return found


def loss_window(nodes: list[dict[str, str]]) -> str | None:
    """What an acknowledged event may be lost to, in words; None when every write is fsynced."""
    if all(node["appendonly"] == "yes" and node["appendfsync"] == "always" for node in nodes):
        return None
    if any(node["appendonly"] != "yes" for node in nodes):
        return "every event accepted since the last RDB snapshot (AOF is off on a node)"
    if any(node["appendfsync"] == "no" for node in nodes):
        return "the operating system's write-back delay, often 30 s (appendfsync no)"
    return "about 1 s of accepted events on a Redis crash or power loss (appendfsync everysec)"


def durability_problem() -> str | None:
    """Why stream mode must not start here, or None. Strict durability demands that every Redis
    primary fsyncs each write before answering, so that a 202 survives a crash of Redis."""
    if not is_enabled():
        return None
    try:
        nodes = persistence()
    except redis.RedisError as exc:
        return f"auditsvc: AUDITSVC_INGEST_MODE=stream, but Redis at AUDITSVC_STREAM_URL cannot be checked: {exc}"
    window = loss_window(nodes)
    if window is None or settings.AUDITSVC_STREAM_DURABILITY == "relaxed":
        return None
    described = ", ".join(f"{n['node']} appendonly={n['appendonly']} appendfsync={n['appendfsync']}" for n in nodes)
    return (
        f"auditsvc: stream mode acknowledges events only once Redis has them on disk, but this Redis ({described}) "
        f"could lose {window}. Configure `appendonly yes` and `appendfsync always`, or accept the loss window "
        "with AUDITSVC_STREAM_DURABILITY=relaxed."
    )


# --- Dead letters -------------------------------------------------------------------------

# Move one dead letter back into its shard's stream (after the cause is fixed: a type
# registered, say), with the MAC it came with: a forged entry stays one. KEYS: stream, queued
# set, dead-letter stream; ARGV: the letter's id.
_REQUEUE = """
local letter = redis.call('XRANGE', KEYS[3], ARGV[1], ARGV[1])
if #letter == 0 then return 0 end
local fields = letter[1][2]
local entry, mac = nil, ''
for i = 1, #fields, 2 do
  if fields[i] == 'e' then entry = fields[i + 1] end
  if fields[i] == 'm' then mac = fields[i + 1] end
end
if entry then
  redis.call('XADD', KEYS[1], '*', 'e', entry, 'm', mac)
  local ok, decoded = pcall(cjson.decode, entry)
  if ok and type(decoded) == 'table' and decoded['id'] then
    redis.call('HSET', KEYS[2], decoded['id'], tostring(decoded['source']))
  end
end
redis.call('XDEL', KEYS[3], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class DeadLetter:
    shard: int
    letter_id: str
    entry_id: str
    event_id: str | None
    event_type: str | None
    reason: str
    deliveries: int

    @property
    def dead_since(self) -> datetime:
        return datetime.fromtimestamp(int(self.letter_id.split("-", 1)[0]) / 1000, tz=UTC)


def dead_letters(limit: int = 100) -> list[DeadLetter]:
    """The newest dead letters of every shard, newest first."""
    letters = []
    for shard in range(shard_count()):
        for letter_id, fields in client().xrevrange(dead_key(shard), count=limit):
            try:
                entry = orjson.loads(fields.get("e", ""))
            except orjson.JSONDecodeError:
                entry = None
            readable = isinstance(entry, dict)
            letters.append(
                DeadLetter(
                    shard=shard,
                    letter_id=letter_id,
                    entry_id=fields.get("entry_id", ""),
                    event_id=str(entry.get("id")) if readable else None,
                    event_type=str(entry.get("type")) if readable else None,
                    reason=fields.get("reason", ""),
                    deliveries=int(fields.get("deliveries") or 0),
                )
            )
    letters.sort(key=lambda letter: entry_age_seconds(letter.letter_id))
    return letters[:limit]


def requeue_dead_letter(shard: int, letter_id: str) -> bool:
    """Append a dead letter's entry to its stream again; False if it is no longer there."""
    keys = [stream_key(shard), queued_key(shard), dead_key(shard)]
    return bool(client().register_script(_REQUEUE)(keys=keys, args=[letter_id]))


def overview() -> dict[str, Any]:
    """The stream's state for the admin's pages: lag, shards and dead letters, or why it is unknown."""
    if not is_enabled():
        return {"enabled": False}
    try:
        states = shard_states()
    except redis.RedisError as exc:
        return {"enabled": True, "error": f"Redis is unreachable: {exc}"}
    return {
        "enabled": True,
        "lag": total_lag(states),
        "states": states,
        "dead": sum(state.dead for state in states),
    }


@metrics.report_state
def _stream_lag() -> Iterator[Metric]:
    """The stream's lag and forged entries, in stream mode (direct mode has no stream to read)."""
    if settings.AUDITSVC_INGEST_MODE != "stream":
        return
    entries = GaugeMetricFamily("auditsvc_stream_lag_entries", "Entries in the ingest stream not yet stored.")
    oldest = GaugeMetricFamily("auditsvc_stream_lag_seconds", "Age of the oldest entry not yet stored.")
    forged = CounterMetricFamily(
        "auditsvc_stream_forged_entries",
        "Stream entries the drainers refused for a missing or wrong MAC (written to Redis, not by the API).",
    )
    try:
        states = shard_states()
    except Exception:
        logger.warning("metrics: the stream lag could not be read", exc_info=True)
        return
    lag = total_lag(states)
    entries.add_metric([], float(lag.entries))
    oldest.add_metric([], float(lag.oldest_seconds or 0.0))
    forged.add_metric([], float(sum(state.forged for state in states)))
    yield entries
    yield oldest
    yield forged

"""Liveness and readiness probes (no auth): /healthz is the process, /readyz its database (or stream)."""

from __future__ import annotations

import logging
from typing import Any

import redis
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse

from auditsvc.api.throttling import cache_unreachable
from events.ingest import stream
from events.integrity.sealing import oldest_unsealed_age_seconds

logger = logging.getLogger(__name__)


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


# Loading the migration graph reads every migration file: done until it first comes out
# clean, then never again in this process (its code, and so its migrations, cannot change).
_migrations_applied = False


def _pending_migrations() -> int:
    global _migrations_applied  # noqa: PLW0603 - a process-wide, write-once flag
    if _migrations_applied:
        return 0
    executor = MigrationExecutor(connection)
    pending = len(executor.migration_plan(executor.loader.graph.leaf_nodes()))
    _migrations_applied = pending == 0
    return pending


def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the service can take events: in direct mode its database answers with every
    migration applied; in stream mode its Redis answers (the database may be away meanwhile:
    the stream holds what arrives, and the lag shows it). Otherwise 503. A cache Redis this
    process found down is reported, never a 503: without it, rate limits only fail open."""
    if stream.is_enabled():
        return _stream_readiness()
    try:
        pending = _pending_migrations()
        # Also the reachability check: one indexed query. Operators alert on a growing value
        # (the sealer, cron or auto-seal, is not running).
        oldest_unsealed = oldest_unsealed_age_seconds()
    except DatabaseError:
        _log_database_unreachable()
        return _unavailable({"status": "unavailable", "database": "unreachable"})
    if pending:
        return _unavailable({"status": "unavailable", "database": "ok", "pending_migrations": pending})
    return JsonResponse(
        _with_cache_state({"status": "ok", "database": "ok", "oldest_unsealed_seconds": oldest_unsealed})
    )


def _stream_readiness() -> JsonResponse:
    try:
        states = stream.shard_states()
        window = stream.loss_window(stream.persistence())
    except redis.RedisError:
        logger.warning("readiness check: the stream's Redis is unreachable", exc_info=True)
        return _unavailable({"status": "unavailable", "stream": "unreachable"})
    lag = stream.total_lag(states)
    body: dict[str, Any] = {
        "status": "ok",
        "mode": "stream",
        "stream": "ok",
        "lag": lag.as_dict(),
        "dead_letters": sum(state.dead for state in states),
        "durability": "relaxed" if window else "strict",
    }
    if window:
        body["loss_window"] = window
    try:
        body["oldest_unsealed_seconds"] = oldest_unsealed_age_seconds()
        body["database"] = "ok"
    except DatabaseError:
        _log_database_unreachable()
        body["database"] = "unreachable"
    return JsonResponse(_with_cache_state(body))


def _with_cache_state(body: dict[str, Any]) -> dict[str, Any]:
    # From the rate limits' last count in this process, not a round trip of its own: a cache
    # Redis that times out must not make the probe time out (and every instance unready).
    return {**body, "cache": "unreachable"} if cache_unreachable() else body


def _log_database_unreachable() -> None:
    # The error text (host names, users, versions) is for the operator's log, not for
    # whoever asks this unauthenticated endpoint.
    logger.warning("readiness check: the database is unreachable", exc_info=True)
    connection.close()  # do not keep a broken connection for the next request


def _unavailable(body: dict[str, Any]) -> JsonResponse:
    response = JsonResponse(body)
    response.status_code = 503
    response["Retry-After"] = "5"
    return response

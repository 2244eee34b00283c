"""Liveness and readiness probes (no auth): /healthz is the process, /readyz its database."""

from __future__ import annotations

import logging

from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse

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
    """200 when the database answers and every migration is applied, else 503."""
    try:
        pending = _pending_migrations()
        # Also the reachability check: one indexed query. Operators alert on a growing value
        # (the sealer, cron or auto-seal, is not running).
        oldest_unsealed = oldest_unsealed_age_seconds()
    except DatabaseError:
        # The error text (host names, users, versions) is for the operator's log, not for
        # whoever asks this unauthenticated endpoint.
        logger.warning("readiness check: the database is unreachable", exc_info=True)
        connection.close()  # do not keep a broken connection for the next request
        response = JsonResponse({"status": "unavailable", "database": "unreachable"})
        response.status_code = 503
        response["Retry-After"] = "5"
        return response
    if pending:
        response = JsonResponse({"status": "unavailable", "database": "ok", "pending_migrations": pending})
        response.status_code = 503
        return response
    return JsonResponse({"status": "ok", "database": "ok", "oldest_unsealed_seconds": oldest_unsealed})

"""Liveness and readiness probes (no auth): /healthz is the process, /readyz its database."""

from __future__ import annotations

from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse

from events.sealing import oldest_unsealed_age_seconds


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database answers and every migration is applied, else 503."""
    try:
        connection.ensure_connection()
        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        connection.close()  # do not keep a broken connection for the next request
        response = JsonResponse({"status": "unavailable", "database": "unreachable", "detail": str(exc)[:200]})
        response.status_code = 503
        response["Retry-After"] = "5"
        return response
    if pending:
        response = JsonResponse({"status": "unavailable", "database": "ok", "pending_migrations": len(pending)})
        response.status_code = 503
        return response
    # Operators alert on a growing value: the sealer (cron or auto-seal) is not running.
    return JsonResponse({"status": "ok", "database": "ok", "oldest_unsealed_seconds": oldest_unsealed_age_seconds()})

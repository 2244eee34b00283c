"""Renders every API error, ours and DRF's, in the one shape: {"errors": [{field, code, message}]}."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from django.db import DataError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from auditsvc.errors import FieldError, ProblemError, Unavailable, error_body, json_error_response

logger = logging.getLogger(__name__)


def _flatten(detail: Any, field: str | None) -> list[FieldError]:
    """DRF's nested ErrorDetail dicts/lists → flat FieldErrors with dotted paths."""
    if isinstance(detail, dict):
        errors: list[FieldError] = []
        for key, value in detail.items():
            name = None if key in ("non_field_errors", "detail") else str(key)
            path = f"{field}.{name}" if field and name else (name or field)
            errors.extend(_flatten(value, path))
        return errors
    if isinstance(detail, list):
        return [error for item in detail for error in _flatten(item, field)]
    code = getattr(detail, "code", None) or "invalid"
    return [FieldError(field, str(code), str(detail))]


# The database is down, restarting or unreachable: a 503 the client retries (with the same
# idempotency key), never a 500. Nothing was acknowledged, so nothing is lost.
DATABASE_RETRY_AFTER_SECONDS = 5


# What was asked for is not acknowledged, and the client's retry with the same idempotency key
# is safe: a 503 with Retry-After, never a 500.
# (what failed, code, message, whether the operator's log should hear of it)
_UNAVAILABLE: tuple[tuple[type[Exception] | tuple[type[Exception], ...], str, str, bool], ...] = (
    # The group commit did not answer in time: the event may or may not be stored, as after a
    # timeout on the wire (the database's own errors are logged where they happen).
    (TimeoutError, "commit_timeout", "The commit did not finish in time; retry shortly.", False),
    (
        (OperationalError, InterfaceError),
        "database_unavailable",
        "The database is unavailable; retry shortly.",
        True,
    ),
)


# The database answered, but could not do this now: a serialization failure or deadlock (40xxx),
# a lock not granted in time (55P03), a statement past its timeout (57014). Nothing was
# committed, and the same request again is likely to go through.
_BUSY = (psycopg.errors.TransactionRollback, psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)
_BUSY_MESSAGE = "The database could not finish this now (a conflicting write, a lock or a timeout); retry shortly."


def _unavailable(exc: Exception) -> Response | None:
    if isinstance(exc, Unavailable):
        # Raised where the dependency is known (stream mode: the stream's Redis), so that the
        # code names it. A Redis error of no such caller is not mapped here: the cache's uses
        # degrade instead (rate limits fail open), and one that does not is a bug, a 500.
        cause = exc.__cause__ or exc
        return _503(exc.code, exc.message, cause, logged=True)
    if isinstance(exc, OperationalError) and isinstance(exc.__cause__, _BUSY):
        return _503("database_busy", _BUSY_MESSAGE, exc, logged=True)
    for kinds, code, message, logged in _UNAVAILABLE:
        if isinstance(exc, kinds):
            return _503(code, message, exc, logged=logged)
    return None


def _503(code: str, message: str, cause: BaseException, *, logged: bool) -> Response:
    if logged:
        logger.warning("%s: %s", code, str(cause).splitlines()[0] if str(cause) else type(cause).__name__)
    response = Response(error_body([FieldError(None, code, message)]), status=status.HTTP_503_SERVICE_UNAVAILABLE)
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ProblemError):
        return Response(error_body(exc.errors), status=exc.status)
    if isinstance(exc, DataError):
        # A value the database cannot represent (a NUL character, a number out of range) that
        # slipped past validation: still the client's input, so a 400, never a 500.
        return Response(
            error_body([FieldError(None, "invalid_value", "A value in the request cannot be stored or searched.")]),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if (unavailable := _unavailable(exc)) is not None:
        return unavailable
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # an unexpected error: Django's handler500 answers (JSON for /api/)
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail, None)
    elif isinstance(exc, exceptions.ParseError):
        errors = [FieldError(None, "malformed_json", str(exc.detail))]
    elif isinstance(exc, exceptions.Throttled):
        wait = getattr(exc, "wait", None) or 1
        errors = [FieldError(None, "rate_limited", f"Too many requests; retry in {wait:.0f} s.")]
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "error"
        errors = [FieldError(None, code, str(exc.detail))]
    else:
        errors = [FieldError(None, "error", str(exc))]
    response.data = error_body(errors)
    return response


def _is_api(request: HttpRequest) -> bool:
    return not request.path.startswith("/admin/")


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: the JSON error shape for API clients, never an HTML page."""
    if not _is_api(request):
        return defaults.server_error(request)
    return json_error_response(
        status.HTTP_500_INTERNAL_SERVER_ERROR, "server_error", "Internal error; it has been logged."
    )


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: the error shape for unknown routes outside the admin."""
    if not _is_api(request):
        return defaults.page_not_found(request, exception or Exception())
    return json_error_response(status.HTTP_404_NOT_FOUND, "not_found", "No such resource.")

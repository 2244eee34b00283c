"""The one error shape: a list of {field, code, message}, raised from any layer.

Plain Python (no DRF) so that the ingest functions, management commands and the API all
raise and report the same errors; auditsvc.api.exceptions renders them as HTTP responses,
and views outside DRF (/metrics) answer with json_error_response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import JsonResponse


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str | None  # dotted path into the request ("events[3].occurred_at"), None for the request
    code: str  # stable, machine-readable
    message: str  # for people

    def as_dict(self) -> dict[str, str | None]:
        return {"field": self.field, "code": self.code, "message": self.message}


def error_body(errors: list[FieldError]) -> dict[str, Any]:
    return {"errors": [error.as_dict() for error in errors]}


def json_error_response(status_code: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body([FieldError(None, code, message)]), status=status_code)


class ProblemError(Exception):
    """A request that cannot be served as asked; status is the HTTP status the API answers with."""

    status = 400

    def __init__(self, errors: list[FieldError], *, status: int | None = None) -> None:
        super().__init__("; ".join(f"{e.field or '-'}: {e.code}" for e in errors))
        self.errors = errors
        if status is not None:
            self.status = status


class InvalidInput(ProblemError):
    status = 400


class Conflict(ProblemError):
    status = 409


class Unavailable(Exception):
    """Something the request needs does not answer (code names what: `stream_unavailable`); the
    API answers 503 with Retry-After. Nothing was acknowledged: a retry with the same key is safe."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

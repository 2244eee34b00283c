"""The one error shape: a list of {field, code, message}, raised from any layer.

Plain Python (no DRF) so that the ingest functions, management commands and the API all
raise and report the same errors; auditsvc.api.exceptions renders them as HTTP responses.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str | None  # dotted path into the request ("events[3].occurred_at"), None for the request
    code: str  # stable, machine-readable
    message: str  # for people

    def as_dict(self) -> dict[str, str | None]:
        return {"field": self.field, "code": self.code, "message": self.message}


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

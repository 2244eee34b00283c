"""Logs: one JSON object per line (LOG_FORMAT=json, production's default) or readable text.

structlog renders everything through one formatter: its own events and every standard
logger's records (Django's, gunicorn's, ours), each with the request's context merged in, so a
request's lines share its request_id. django-structlog's middleware writes one line per request
(request_finished, or request_failed with the traceback); the receivers below add what an
operator needs to that line and keep out what must never be there: no query string, header,
body or secret, only the API key's prefix.

Django settings are not imported here: gunicorn.conf.py builds its own loggers from
logging_config() before Django is set up.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django_structlog import signals
from django_structlog.app_settings import app_settings

from auditsvc.client_ip import client_ip
from auditsvc.routes import route_of

FORMATS = ("json", "text")

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _json_formatter() -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,  # the traceback as one "exception" string
            structlog.processors.JSONRenderer(serializer=_json_line),
        ],
    )


# Dataclasses and datetimes as str() wrote them: a value's own __str__ may redact it (a secret's).
_AS_THE_STDLIB_WROTE = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def _json_line(event: dict[str, Any], **_: Any) -> str:
    """orjson: a request's line in 1.5 µs against the stdlib encoder's 22 (measured); what orjson refuses (an
    integer beyond 64 bits) goes through the stdlib, and what neither knows is written as str()."""
    try:
        return orjson.dumps(event, default=str, option=_AS_THE_STDLIB_WROTE).decode()
    except TypeError:
        return json.dumps(event, default=str)


def _text_formatter() -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback),
        ],
    )


def logging_config(log_format: str, level: str, *, mail_admins: bool = True) -> dict[str, Any]:
    """The dictConfig of every process: console lines in log_format; errors also mailed to
    ADMINS (at most one mail per kind of error per AUDITSVC_ERROR_MAIL_INTERVAL_SECONDS)."""
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"console": {"()": _json_formatter if log_format == "json" else _text_formatter}},
        "filters": {"once_per_interval": {"()": "auditsvc.logs.OncePerInterval"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "console"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "INFO"},
            "pgserver": {"level": "WARNING"},  # start/stop chatter of the embedded database
            # Each request is logged once, by django-structlog: Django's own "Not Found: /x"
            # lines would repeat it. Its errors still go to the maintainers.
            "django.request": {"handlers": [], "level": "ERROR", "propagate": False},
        },
    }
    if mail_admins:
        config["handlers"]["mail_admins"] = {
            "class": "django.utils.log.AdminEmailHandler",
            "reporter_class": "auditsvc.alerts.PrivateErrorReport",
            "level": "ERROR",
            "filters": ["once_per_interval"],
        }
        config["loggers"]["django.request"]["handlers"] = ["mail_admins"]
        # Errors outside a request (the sealer, the stream drainer, the group committer).
        config["loggers"]["events"] = {"handlers": ["mail_admins"], "level": level}
    return config


def gunicorn_logging_config(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """gunicorn's own lines (workers booting, timeouts) in the format the workers log in."""
    config = logging_config(chosen_format(environ), "INFO", mail_admins=False)
    console = ["console"]
    config["loggers"]["gunicorn.error"] = {"handlers": console, "level": "INFO", "propagate": False}
    # The access log holds query strings: only when asked for (the workers log each request).
    access = console if environ.get("GUNICORN_ACCESS_LOG") else []
    config["loggers"]["gunicorn.access"] = {"handlers": access, "level": "INFO", "propagate": False}
    return config


def chosen_format(environ: Mapping[str, str] = os.environ) -> str:
    """LOG_FORMAT, else json in production and text elsewhere (settings.py validates it)."""
    given = (environ.get("LOG_FORMAT") or "").strip().lower()
    if given in FORMATS:
        return given
    return "json" if (environ.get("AUDITSVC_ENV") or "").strip().lower() == "production" else "text"


def configure_structlog() -> None:
    logging.captureWarnings(True)  # a Python warning is a log line too, in the same format
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


class OncePerInterval(logging.Filter):
    """Lets one record of a kind (logger, message template, exception type) through per
    interval, per process: a database outage must not send a mail per failed request."""

    def __init__(self) -> None:
        super().__init__()
        self._last_sent: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        from django.conf import settings  # noqa: PLC0415 - configured by the time errors are logged

        interval = settings.AUDITSVC_ERROR_MAIL_INTERVAL_SECONDS
        exception = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        kind = (record.name, str(record.msg), exception)
        now = time.monotonic()
        with self._lock:
            last = self._last_sent.get(kind)
            if last is not None and now - last < interval:
                return False
            self._last_sent[kind] = now
        return True


# --- What each request's line says ------------------------------------------------------------

# An upstream X-Request-ID is kept when it looks like an id; anything else (too long, spaces,
# control characters that could forge a text line) is replaced by one of ours.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+=/-]{1,128}")


@receiver(signals.bind_extra_request_metadata)
def _start_request_line(request: HttpRequest, log_kwargs: dict[str, Any], **kwargs: Any) -> None:
    _bind_request_id(request)
    log_kwargs.clear()  # the full path and user agent stay out of the logs
    log_kwargs.update(method=request.method, path=request.path)


def _bind_request_id(request: HttpRequest) -> None:
    given = request.META.get("HTTP_X_REQUEST_ID", "")  # not request.headers: it would parse them all
    request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    structlog.contextvars.bind_contextvars(request_id=request_id)
    request.request_id = request_id  # type: ignore[attr-defined]
    request.log_started = time.perf_counter()  # type: ignore[attr-defined]


@receiver(signals.bind_extra_request_finished_metadata)
def _finish_request_line(
    request: HttpRequest, response: HttpResponse, log_kwargs: dict[str, Any], **kwargs: Any
) -> None:
    log_kwargs.clear()
    log_kwargs.update(_request_fields(request), status=response.status_code)
    _answer_with_request_id(request, response)


@receiver(signals.bind_extra_request_failed_metadata)
def _fail_request_line(request: HttpRequest, log_kwargs: dict[str, Any], **kwargs: Any) -> None:
    log_kwargs.clear()
    log_kwargs.update(_request_fields(request), status=500)


@receiver(signals.update_failure_response)
def _answer_failure_with_request_id(request: HttpRequest, response: HttpResponse, **kwargs: Any) -> None:
    _answer_with_request_id(request, response)


def _request_fields(request: HttpRequest) -> dict[str, Any]:
    started = getattr(request, "log_started", None)
    fields: dict[str, Any] = {"method": request.method, "route": route_of(request)}
    if started is not None:
        fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
    api_key = getattr(request, "auth", None)  # DRF puts the ApiKey on the Django request too
    if api_key is not None and hasattr(api_key, "prefix"):
        fields["key_prefix"] = api_key.prefix
        fields["source"] = api_key.source.slug
    user = getattr(request, "user", None)
    if getattr(user, "pk", None) is not None:  # a staff user (an API key's ServiceUser has none)
        fields["user"] = user.get_username()  # type: ignore[union-attr]
    fields["ip"] = client_ip(request)
    return fields


# --- The same line for a request that Django's middleware never sees (events.api.accept) ------

_request_logger = structlog.get_logger("django_structlog.middlewares.request")  # the middleware's own
_request_logger_levels = logging.getLogger("django_structlog.middlewares.request")


def start_request_line(request: HttpRequest) -> None:
    """As django-structlog's middleware begins a request: a fresh context with its request_id."""
    structlog.contextvars.clear_contextvars()
    _bind_request_id(request)
    if _request_logger_levels.isEnabledFor(app_settings.STATUS_START_LOG_LEVEL):  # DEBUG: rarely
        _request_logger.log(
            app_settings.STATUS_START_LOG_LEVEL, "request_started", method=request.method, path=request.path
        )


def finish_request_line(request: HttpRequest, response: HttpResponse) -> None:
    """As the middleware ends a request: its one line (none after an unexpected error: the
    middleware wrote request_failed, with the traceback), the X-Request-ID answer header."""
    if hasattr(request, "_raised_exception"):
        del request._raised_exception
    else:
        _request_logger.log(
            _level_for(response.status_code),
            "request_finished",
            **_request_fields(request),
            status=response.status_code,
        )
    _answer_with_request_id(request, response)
    structlog.contextvars.clear_contextvars()


def _level_for(status_code: int) -> int:
    levels = {
        2: app_settings.STATUS_2XX_LOG_LEVEL,
        4: app_settings.STATUS_4XX_LOG_LEVEL,
        5: app_settings.STATUS_5XX_LOG_LEVEL,
    }
    return int(levels.get(status_code // 100, app_settings.STATUS_DEFAULT_LOG_LEVEL))


def _answer_with_request_id(request: HttpRequest, response: HttpResponse) -> None:
    request_id = getattr(request, "request_id", None)
    if request_id:
        response["X-Request-ID"] = request_id

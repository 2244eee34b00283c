"""Telling the maintainers: who gets the error mails (ADMINS), and Sentry when SENTRY_DSN is set.

The mails are sent by Django's AdminEmailHandler (wired in auditsvc.logs) with a report of our
own, PrivateErrorReport: Django's would carry the query string, the POST data, the headers and
every frame's local variables, and any of them may hold a payload's personal data.
"""

from __future__ import annotations

import traceback
from email.utils import getaddresses
from types import TracebackType
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from django.utils.html import escape


def admin_addresses(raw: str) -> list[tuple[str, str]]:
    """AUDITSVC_ADMINS ("Ops <ops@example.com>, dev@example.com") as Django's ADMINS."""
    if not raw.strip():
        return []
    admins = []
    for name, address in getaddresses([raw]):
        local, _, domain = address.rpartition("@")
        if not local or not domain or " " in address:
            raise ImproperlyConfigured(f"AUDITSVC_ADMINS: {address or name!r} is not an email address")
        admins.append((name or address, address))
    return admins


def start_sentry(dsn: str, *, environment: str, traces_sample_rate: float) -> None:
    """Errors (and, when sampled, traces) to Sentry; never a body, cookie, query string, frame's
    local variables or SQL parameter: an audit payload or a filter may hold personal data. Headers
    go with Sentry's denylist applied (Authorization, cookies and the like become [Filtered])."""
    import sentry_sdk  # noqa: PLC0415 - only when a DSN is set
    from sentry_sdk.integrations.django import DjangoIntegration  # noqa: PLC0415

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        integrations=[DjangoIntegration()],
        data_collection={
            "user_info": False,
            "cookies": {"mode": "off"},
            "http_headers": {"request": {"mode": "denylist"}},
            "http_bodies": [],
            "url_query_params": {"mode": "off"},
            "database_query_data": False,
            "queues": False,
            "stack_frame_variables": False,
        },
        max_request_body_size="never",
        traces_sample_rate=traces_sample_rate,
    )


class PrivateErrorReport:
    """What an error mail says: the method and path (no query string), the exception and its
    traceback, without the local variables or the request's data, headers and cookies."""

    def __init__(
        self,
        request: HttpRequest | None,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        tb: TracebackType | None,
        is_email: bool = False,
        **kwargs: Any,
    ) -> None:
        self.request, self.exc_type, self.exc_value, self.tb = request, exc_type, exc_value, tb

    def get_traceback_text(self) -> str:
        lines = []
        if self.request is not None:
            lines.append(f"Request: {self.request.method} {self.request.path} (no query, body or headers)")
        if self.exc_type is not None:
            lines.append("".join(traceback.format_exception(self.exc_type, self.exc_value, self.tb)))
        return "\n\n".join(lines) or "No exception."

    def get_traceback_html(self) -> str:
        return f"<pre>{escape(self.get_traceback_text())}</pre>"

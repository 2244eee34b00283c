"""Telling the maintainers: who gets the error mails (ADMINS), and Sentry when SENTRY_DSN is set.

The mails themselves are Django's (AdminEmailHandler, wired in auditsvc.logs); Django's report
filter already hides settings and headers that look secret (Authorization among them).
"""

from __future__ import annotations

from email.utils import getaddresses

from django.core.exceptions import ImproperlyConfigured


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

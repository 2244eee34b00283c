"""The answer to a locked-out admin login (django-axes counts the failures, settings.AXES_*)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse


def locked_out(request: HttpRequest, credentials: Any = None, *args: Any, **kwargs: Any) -> HttpResponse:
    response = HttpResponse(
        "Too many failed logins. Try again later.", status=429, content_type="text/plain; charset=utf-8"
    )
    response["Retry-After"] = str(settings.AUDITSVC_LOGIN_LOCKOUT_SECONDS)
    return response

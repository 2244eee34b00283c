"""The admin login, guarded against password guessing: after AUDITSVC_LOGIN_MAX_FAILURES
failures for a username or a client address, further attempts get 429 until the window
(AUDITSVC_LOGIN_LOCKOUT_SECONDS) passes. Counters live in the shared cache."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib import admin
from django.core.cache import caches
from django.http import HttpRequest, HttpResponse


def _keys(request: HttpRequest) -> list[str]:
    username = request.POST.get("username", "").strip().lower()
    address = request.META.get("REMOTE_ADDR", "")
    # Hashed: usernames and addresses do not sit in the cache in clear.
    return [
        "login-failures:" + hashlib.sha256(f"user:{username}".encode()).hexdigest()[:32],
        "login-failures:" + hashlib.sha256(f"addr:{address}".encode()).hexdigest()[:32],
    ]


def admin_login(request: HttpRequest, extra_context: dict[str, object] | None = None) -> HttpResponse:
    if request.method != "POST":
        return admin.site.login(request, extra_context)
    cache, keys = caches["default"], _keys(request)
    if any((cache.get(key) or 0) >= settings.AUDITSVC_LOGIN_MAX_FAILURES for key in keys):
        response = HttpResponse(
            "Too many failed logins. Try again later.", status=429, content_type="text/plain; charset=utf-8"
        )
        response["Retry-After"] = str(settings.AUDITSVC_LOGIN_LOCKOUT_SECONDS)
        return response
    response = admin.site.login(request, extra_context)
    if request.user.is_authenticated:
        cache.delete_many(keys)
    else:
        for key in keys:
            cache.add(key, 0, timeout=settings.AUDITSVC_LOGIN_LOCKOUT_SECONDS)
            cache.incr(key)
    return response

"""`Authorization: Bearer <api key>` authentication for services."""

from __future__ import annotations

from typing import Any, NoReturn

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

import auditsvc.api.schema  # noqa: F401 - registers the OpenAPI description of this scheme
from auditsvc.api.throttling import count_unknown_key
from events.keys import find_api_key, touch_api_key


class ServiceUser:
    """request.user for an API key: authenticated, never staff; request.auth is the ApiKey."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False

    def __init__(self, source_slug: str) -> None:
        self.username = f"source:{source_slug}"

    def __str__(self) -> str:
        return self.username


class ApiKeyAuthentication(BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Authorization header must be 'Bearer <key>'.", code="authentication_failed"
            )
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError:
            refuse_unknown_key(request)
        api_key = find_api_key(raw)
        if api_key is None:
            refuse_unknown_key(request)
        if api_key.is_revoked:
            raise exceptions.AuthenticationFailed("This API key has been revoked.", code="key_revoked")
        if not api_key.source.is_active:
            raise exceptions.AuthenticationFailed("This key's source is inactive.", code="source_inactive")
        touch_api_key(api_key)
        return ServiceUser(api_key.source.slug), api_key

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="api"'


def refuse_unknown_key(request: Request) -> NoReturn:
    """401, or 429 once a client has sent too many unknown keys this minute: guessing keys
    costs a lookup each, and must not go unbounded."""
    wait = count_unknown_key(request)
    if wait is not None:
        raise exceptions.Throttled(wait=wait, detail="Too many unknown API keys from this address; slow down.")
    raise exceptions.AuthenticationFailed("Invalid API key.", code="authentication_failed")

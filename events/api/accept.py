"""POST /api/v1/events outside Django's request cycle: the accept path.

A service's POST with an API key costs far more in the framework than in the service (the
profile in docs/BENCHMARKS.md: the middleware stack, URL resolution and DRF's view machinery
together outweighed parsing, checking and storing the event). This WSGI application sits in
front of Django and answers that one request itself; every other request, and any POST it
cannot answer exactly as Django would, goes to Django untouched.

It writes no rule of its own: it calls the ones the DRF view uses, where they live. The key is
checked by ApiKeyAuthentication, the scope by key_scope_refusal (HasScope's), the rate by the
view's throttles, the body by events.api.ingest_endpoint (the view's own code), errors are
rendered by api_exception_handler and, for the unexpected, by Django's response_for_exception;
the headers Django's middleware adds are added by the same middleware classes, and the log
line and the metrics are those of auditsvc.logs and auditsvc.metrics. A test compares both
paths' answers header by header (tests/events/ingest/test_accept_path.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from django.conf import settings
from django.core import signals
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import SuspiciousOperation
from django.core.handlers.exception import response_for_exception
from django.core.handlers.wsgi import WSGIRequest, get_script_name
from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import set_script_prefix
from django.utils.log import log_response
from rest_framework import exceptions

from auditsvc import logs, metrics
from auditsvc.api.authentication import ApiKeyAuthentication
from auditsvc.api.exceptions import api_exception_handler
from auditsvc.api.permissions import HasScope, key_scope_refusal
from auditsvc.api.renderers import ORJSONRenderer
from events.api.ingest_endpoint import post_events
from events.api.views import EventViewSet
from events.models import SCOPE_INGEST

ROUTE = "/api/v1/events"
# DRF's answer to this route carries the methods its view allows (a test holds the two alike).
_DRF_HEADERS = {"Allow": "GET, POST, HEAD, OPTIONS"}
# Accept values for which DRF's negotiation picks the one JSON renderer (any other goes to Django,
# which answers it, 406 included).
_JSON_ACCEPTED = frozenset({"*/*", "application/*", "application/json"})

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def serves(environ: dict[str, Any]) -> bool:
    """Whether the request is one the accept path answers (cheap; before a request is built):
    a POST to the route with a Bearer key and no cookie, asking for JSON."""
    if environ.get("PATH_INFO") != ROUTE or environ.get("REQUEST_METHOD") != "POST":
        return False
    authorization = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace").split()
    if not authorization or authorization[0].lower() != b"bearer":
        return False  # a session, or no credentials: DRF's other authenticators decide
    if environ.get("HTTP_COOKIE"):
        return False  # Django's session and CSRF middleware answer cookies (Set-Cookie, Vary)
    accept = environ.get("HTTP_ACCEPT")
    return accept is None or any(_answers_json(media) for media in accept.split(","))


def _answers_json(media: str) -> bool:
    media_type, *parameters = (part.strip() for part in media.split(";"))
    return media_type in _JSON_ACCEPTED and all(parameter.startswith("q=") for parameter in parameters)


class AcceptPath:
    """The accept path, with the middleware whose rules it shares (set up once, as Django sets up
    its own: settings are read here)."""

    def __init__(self) -> None:
        self._security = SecurityMiddleware(_no_view)
        self._common = CommonMiddleware(_no_view)
        self._frames = XFrameOptionsMiddleware(_no_view)
        self._authentication = ApiKeyAuthentication()
        assert EventViewSet.authentication_classes[0] is ApiKeyAuthentication, "the view's first authenticator"

    def takes(self, request: HttpRequest) -> bool:
        """Whether Django's middleware would let the request through to the view unchanged: its
        host is allowed, and neither a redirect (HTTPS, www) nor a refused user agent answers."""
        try:
            if self._common.process_request(request) is not None:
                return False
        except (SuspiciousOperation, DjangoPermissionDenied):
            return False
        return self._security.process_request(request) is None

    def answer(self, request: HttpRequest) -> HttpResponse:
        """The response the DRF view and Django's middleware would give, logged and counted alike."""
        started = time.perf_counter()
        request.served_route = ROUTE  # type: ignore[attr-defined]
        logs.start_request_line(request)
        data: Any = None
        try:
            data, status, headers = self._ingest(request)
            response = HttpResponse(
                ORJSONRenderer().render(data), status=status, content_type="application/json", headers=headers
            )
        except Exception as exc:  # unexpected: Django's own 500 (logged, mailed, its handler500)
            response = response_for_exception(request, exc)
        try:
            for middleware in (self._frames, self._common, self._security):  # Django's order, innermost first
                response = cast(HttpResponse, middleware.process_response(request, response))
        except Exception as exc:
            response = response_for_exception(request, exc)
        response._resource_closers.append(request.close)  # type: ignore[attr-defined]  # as get_response
        if response.status_code >= 400:  # as BaseHandler.get_response: a 4xx warns, a 5xx mails the admins
            log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        logs.finish_request_line(request, response)
        metrics.count_request(request, response.status_code, time.perf_counter() - started, data)
        return response

    def _ingest(self, request: HttpRequest) -> tuple[Any, int, dict[str, str]]:
        """As DRF's APIView.initial and handle_exception: authenticate, check the scope and the
        rate, then the view's work; an expected error rendered by the API's exception handler."""
        try:
            authenticated = self._authentication.authenticate(request)  # type: ignore[arg-type]
            assert authenticated is not None  # serves(): a Bearer header, which it answers or refuses
            request.user, request.auth = authenticated  # type: ignore[attr-defined]
            api_key = authenticated[1]
            refusal = key_scope_refusal(api_key.scopes, SCOPE_INGEST)
            if refusal is not None:
                raise exceptions.PermissionDenied(detail=refusal, code=HasScope.code)
            waits = [throttle.wait() for throttle in self._refusing_throttles(request)]
            if waits:
                raise exceptions.Throttled(wait=max((wait for wait in waits if wait is not None), default=None))
            body, status = post_events(request, api_key)
            return body, status, dict(_DRF_HEADERS)
        except Exception as exc:
            if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
                exc.auth_header = self._authentication.authenticate_header(request)  # type: ignore[arg-type, union-attr]
            problem = api_exception_handler(exc, {"request": request, "view": None})
            if problem is None:
                raise
            headers = {name: value for name, value in problem.items() if name.lower() != "content-type"}
            return problem.data, problem.status_code, {**_DRF_HEADERS, **headers}

    @staticmethod
    def _refusing_throttles(request: HttpRequest) -> list[Any]:
        throttles = [throttle_class() for throttle_class in EventViewSet.throttle_classes]
        return [throttle for throttle in throttles if not throttle.allow_request(request, None)]  # type: ignore[arg-type]


def _no_view(request: HttpRequest) -> HttpResponse:
    raise AssertionError("the accept path's middleware only checks requests and answers")


def in_front_of(django_app: WSGIApp) -> WSGIApp:
    """The service's WSGI application: the accept path in front of Django's (AUDITSVC_ACCEPT_PATH
    off: Django's alone, e.g. to compare the two)."""
    if not settings.AUDITSVC_ACCEPT_PATH:
        return django_app
    accept_path = AcceptPath()

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not serves(environ):
            return django_app(environ, start_response)
        set_script_prefix(get_script_name(environ))
        request = WSGIRequest(environ)
        if not accept_path.takes(request):
            return django_app(environ, start_response)
        signals.request_started.send(sender=AcceptPath, environ=environ)
        response = accept_path.answer(request)
        response._handler_class = AcceptPath  # type: ignore[attr-defined]  # response.close() sends request_finished, as Django's
        cookies = [("Set-Cookie", cookie.output(header="")) for cookie in response.cookies.values()]
        start_response(f"{response.status_code} {response.reason_phrase}", [*response.items(), *cookies])
        return response

    return application

"""A request's route: its URL pattern, never the raw path, so metrics labels and log fields stay
a small set (one per pattern) and carry no ids."""

from __future__ import annotations

import functools
import re

from django.http import HttpRequest

_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")


def route_of(request: HttpRequest) -> str:
    served_as = getattr(request, "served_route", None)  # set by a path that resolves no URL (accept)
    if served_as is not None:
        return str(served_as)
    match = getattr(request, "resolver_match", None)
    return _route(match.route) if match is not None and match.route else "unmatched"


@functools.lru_cache(maxsize=512)  # one per URL pattern: a bounded set
def _route(pattern: str) -> str:
    """A URL pattern as a label: "api/v1/events/(?P<pk>[^/.]+)$" → "/api/v1/events/{pk}"."""
    return "/" + _NAMED_GROUP.sub(r"{\1}", pattern).replace("^", "").replace("$", "")

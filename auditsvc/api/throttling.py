"""Per-API-key rate limits: a fixed one-minute window counted in the shared cache (Redis
when REDIS_URL is set), one increment per request."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.cache import caches
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from auditsvc.client_ip import client_ip


class ApiKeyRateThrottle(BaseThrottle):
    """AUDITSVC_RATE_LIMIT_PER_MINUTE requests per key and minute (0: unlimited); 429 beyond,
    with Retry-After set to the end of the window. Requests with an unknown key are counted
    per client address instead (count_unknown_key), before they are refused."""

    def allow_request(self, request: Request, view: Any) -> bool:
        limit = settings.AUDITSVC_RATE_LIMIT_PER_MINUTE
        prefix = getattr(request.auth, "prefix", None)
        if not limit or prefix is None:
            return True
        count, self.retry_after = _count_this_minute(f"throttle:{prefix}")
        return count <= limit

    def wait(self) -> float | None:
        return self.retry_after


def count_unknown_key(request: Request) -> float | None:
    """Count a request that named no known key, per client address and minute; the seconds to
    wait once AUDITSVC_UNKNOWN_KEY_LIMIT_PER_MINUTE is passed, else None."""
    limit = settings.AUDITSVC_UNKNOWN_KEY_LIMIT_PER_MINUTE
    if not limit:
        return None
    count, retry_after = _count_this_minute(f"unknown-key:{client_ip(request)}")
    return retry_after if count > limit else None


def _count_this_minute(name: str) -> tuple[int, float]:
    """One more for name in this minute's window: (the count so far, seconds to the window's end).

    One atomic increment; the window's first request creates the counter (add() loses a race
    gracefully: then the other request's counter is incremented)."""
    now = time.time()
    key = f"{name}:{int(now // 60)}"
    cache = caches["default"]
    try:
        count = int(cache.incr(key))
    except ValueError:
        count = 1 if cache.add(key, 1, timeout=90) else int(cache.incr(key))
    return count, 60 - (now % 60)

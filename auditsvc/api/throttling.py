"""Per-API-key rate limits: a fixed one-minute window counted in the shared cache (Redis
when REDIS_URL is set), one increment per request."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.cache import caches
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle


class ApiKeyRateThrottle(BaseThrottle):
    """AUDITSVC_RATE_LIMIT_PER_MINUTE requests per key and minute (0: unlimited); 429 beyond,
    with Retry-After set to the end of the window. Requests without a key are not counted
    (they are refused anyway)."""

    def allow_request(self, request: Request, view: Any) -> bool:
        limit = settings.AUDITSVC_RATE_LIMIT_PER_MINUTE
        prefix = getattr(request.auth, "prefix", None)
        if not limit or prefix is None:
            return True
        now = time.time()
        window = int(now // 60)
        self.retry_after = 60 - (now % 60)
        key = f"throttle:{prefix}:{window}"
        cache = caches["default"]
        # One atomic increment per request; the window's first request creates the counter
        # (add() loses a race gracefully: then the other request's counter is incremented).
        try:
            count = cache.incr(key)
        except ValueError:
            count = 1 if cache.add(key, 1, timeout=90) else cache.incr(key)
        return bool(count <= limit)

    def wait(self) -> float | None:
        return self.retry_after

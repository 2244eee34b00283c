"""Per-API-key rate limits: a fixed one-minute window counted in the shared cache (Redis
when REDIS_URL is set), one increment per request.

A cache outage is not an outage: while the cache's Redis cannot count, requests go on
uncounted (fail open), each one counted in auditsvc_rate_limit_unavailable_total, and the
outage is logged when this process meets it and again when it ends, never once per request.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from django.conf import settings
from django.core.cache import caches
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from auditsvc.client_ip import client_ip
from auditsvc.metrics import RATE_LIMIT_UNAVAILABLE

logger = logging.getLogger(__name__)

# While the cache is down, one request per this many seconds tries it again (the others skip
# it): a Redis that times out instead of refusing then slows one request, not every one.
RETRY_SECONDS = 1.0


class ApiKeyRateThrottle(BaseThrottle):
    """AUDITSVC_RATE_LIMIT_PER_MINUTE requests per key and minute (0: unlimited); 429 beyond,
    with Retry-After set to the end of the window. Requests with an unknown key are counted
    per client address instead (count_unknown_key), before they are refused."""

    def allow_request(self, request: Request, view: Any) -> bool:
        limit = settings.AUDITSVC_RATE_LIMIT_PER_MINUTE
        prefix = getattr(request.auth, "prefix", None)
        if not limit or prefix is None:
            return True
        counted = _count_this_minute(f"throttle:{prefix}")
        if counted is None:
            return True
        count, self.retry_after = counted
        return count <= limit

    def wait(self) -> float | None:
        return self.retry_after


def count_unknown_key(request: Request) -> float | None:
    """Count a request that named no known key, per client address and minute; the seconds to
    wait once AUDITSVC_UNKNOWN_KEY_LIMIT_PER_MINUTE is passed, else None."""
    limit = settings.AUDITSVC_UNKNOWN_KEY_LIMIT_PER_MINUTE
    if not limit:
        return None
    counted = _count_this_minute(f"unknown-key:{client_ip(request)}")
    if counted is None:
        return None
    count, retry_after = counted
    return retry_after if count > limit else None


def _count_this_minute(name: str) -> tuple[int, float] | None:
    """One more for name in this minute's window: (the count so far, seconds to the window's
    end), or None when the cache cannot count (the request goes on uncounted).

    One atomic increment; the window's first request creates the counter (add() loses a race
    gracefully: then the other request's counter is incremented)."""
    if _outage.skips_cache():
        RATE_LIMIT_UNAVAILABLE.inc()
        return None
    now = time.time()
    key = f"{name}:{int(now // 60)}"
    cache = caches["default"]
    try:
        try:
            count = int(cache.incr(key))
        except ValueError:
            count = 1 if cache.add(key, 1, timeout=90) else int(cache.incr(key))
    except redis.RedisError as exc:
        _outage.failed(exc)
        RATE_LIMIT_UNAVAILABLE.inc()
        return None
    _outage.answered()
    return count, 60 - (now % 60)


class _CacheOutage:
    """Whether this process finds the cache's Redis down, since when, and when a request may
    try it again; logs the outage's start and end once each, whichever thread meets them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self._retry_at = 0.0

    def skips_cache(self) -> bool:
        if self.down_since is None:  # read without the lock: the common case costs nothing
            return False
        with self._lock:
            now = time.monotonic()
            if self.down_since is None or now >= self._retry_at:
                self._retry_at = now + RETRY_SECONDS  # this request tries; the others skip
                return False
            return True

    def failed(self, exc: redis.RedisError) -> None:
        with self._lock:
            began = self.down_since is None
            if began:
                self.down_since = time.monotonic()
            self._retry_at = time.monotonic() + RETRY_SECONDS
        if began:
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            logger.warning(
                "rate limits: the cache's Redis is unreachable; requests go on uncounted until it answers "
                "(auditsvc_rate_limit_unavailable_total counts them): %s: %s",
                type(exc).__name__,
                first_line,
            )

    def answered(self) -> None:
        if self.down_since is None:
            return
        with self._lock:
            down_since, self.down_since = self.down_since, None
        if down_since is not None:
            logger.info(
                "rate limits: the cache's Redis answers again after %.1f s; requests are counted again",
                time.monotonic() - down_since,
            )

    def reset(self) -> None:
        with self._lock:
            self.down_since = None
            self._retry_at = 0.0


_outage = _CacheOutage()


def cache_unreachable() -> bool:
    """Whether this process last found the cache's Redis down (no round trip: for /readyz)."""
    return _outage.down_since is not None


def forget_cache_outage() -> None:
    """Forget a cache outage this process met (tests that point the cache at another Redis)."""
    _outage.reset()

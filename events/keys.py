"""API keys: `audit_<prefix>_<secret>`. The prefix finds the row; a keyed SHA-256 checks the secret.

A password hasher is unnecessary (and too slow per request): the secret is 256 random bits,
so it cannot be guessed from its hash, and HMAC keeps a leaked table useless on its own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db.models import Q
from django.utils import timezone

from events.models import SCOPES, SERVICE_SOURCE, ApiKey, Source

KEY_PREFIX = "audit"
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
_PREFIX_LENGTH = 10
# last_used_at is written at most once a minute per key, not once per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    plaintext: str  # shown once, never stored


def hash_secret(secret: str) -> str:
    key = settings.AUDITSVC_API_KEY_HASH_SECRET.encode()
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()


def create_api_key(*, source: Source, scopes: list[str], name: str = "") -> IssuedKey:
    """Issue a key for source; the plaintext is returned once and never stored."""
    if source.slug == SERVICE_SOURCE:
        raise ValueError(f"the {SERVICE_SOURCE!r} source is the log's own: no key may write or read as it")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"scopes must be a non-empty subset of {', '.join(SCOPES)}; got {scopes}")
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(_PREFIX_LENGTH))
    secret = secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        source=source,
        name=name,
        prefix=prefix,
        secret_hash=hash_secret(secret),
        scopes=sorted(set(scopes)),
    )
    return IssuedKey(api_key=api_key, plaintext=f"{KEY_PREFIX}_{prefix}_{secret}")


def split_key(raw: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, else None."""
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        return None
    prefix, secret = parts[1], parts[2]
    if len(prefix) != _PREFIX_LENGTH or not secret or len(secret) > 128:
        return None
    return prefix, secret


# Keys seen in the last few seconds, so that the ingest hot path does not query for them.
# A revocation reaches other processes within AUDITSVC_API_KEY_CACHE_SECONDS (this one: at once).
_cache: dict[str, tuple[float, ApiKey | None]] = {}
_CACHE_MAX = 10_000


def find_api_key(raw: str) -> ApiKey | None:
    """The live or revoked ApiKey that raw belongs to, or None; compared in constant time."""
    parts = split_key(raw)
    if parts is None:
        return None
    prefix, secret = parts
    secret_hash = hash_secret(secret)
    cached = _cache.get(prefix)
    now = time.monotonic()
    if cached is not None and now - cached[0] < settings.AUDITSVC_API_KEY_CACHE_SECONDS:
        api_key = cached[1]
    else:
        try:
            api_key = ApiKey.objects.select_related("source").filter(prefix=prefix).first()
        except (OperationalError, InterfaceError):
            if cached is None or not _outlasts_the_database():
                raise
            # Stream mode takes events while PostgreSQL is away: a key this process knew stays
            # trusted (a revocation waits for the database), asked again in a second.
            api_key = cached[1]
            now -= max(0, settings.AUDITSVC_API_KEY_CACHE_SECONDS - _OUTAGE_RECHECK_SECONDS)
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[prefix] = (now, api_key)
    if api_key is None or not hmac.compare_digest(api_key.secret_hash, secret_hash):
        return None
    return api_key


_OUTAGE_RECHECK_SECONDS = 1


def _outlasts_the_database() -> bool:
    return bool(settings.AUDITSVC_INGEST_MODE == "stream")


def forget_cached_keys() -> None:
    _cache.clear()


def touch_api_key(api_key: ApiKey) -> None:
    """Record use, at most once per LAST_USED_RESOLUTION (a conditional UPDATE, no read)."""
    now = timezone.now()
    if api_key.last_used_at and now - api_key.last_used_at < LAST_USED_RESOLUTION:
        return
    try:
        ApiKey.objects.filter(pk=api_key.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
    except (OperationalError, InterfaceError):
        if not _outlasts_the_database():
            raise
        return  # recorded on a later request, once the database is back
    api_key.last_used_at = now


def revoke_api_key(*, prefix: str) -> ApiKey:
    """Revoke the key with this prefix (idempotent); raises ApiKey.DoesNotExist."""
    api_key = ApiKey.objects.select_related("source").get(prefix=prefix)
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    _cache.pop(prefix, None)
    return api_key

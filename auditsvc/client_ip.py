"""The address of the client behind the TLS proxies (AUDITSVC_TRUSTED_PROXIES).

X-Forwarded-For is believed only from a trusted proxy: each proxy appends the address it saw,
so the client is the right-most entry that is not itself a trusted proxy. A request that did
not come through one is its REMOTE_ADDR, whatever header it carries. (django-ipware's trusted
mode expects the proxies inside X-Forwarded-For, which a standard nginx or HAProxy does not put.)
"""

from __future__ import annotations

import ipaddress
from functools import cache

from django.conf import settings
from django.http import HttpRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@cache
def _trusted(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def _is_trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def is_trusted_proxy(address: str) -> bool:
    return _is_trusted(address, _trusted(tuple(settings.AUDITSVC_TRUSTED_PROXIES)))


def client_ip(request: HttpRequest) -> str:
    remote: str = request.META.get("REMOTE_ADDR", "")
    networks = _trusted(tuple(settings.AUDITSVC_TRUSTED_PROXIES))
    if not networks or not _is_trusted(remote, networks):
        return remote
    forwarded: list[str] = [
        part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()
    ]
    for address in reversed(forwarded):
        if not _is_trusted(address, networks):
            return address
    return remote

"""System checks for configuration mistakes, with stable ids."""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from events import database_roles


@register()
def check_time_zone(app_configs: Any, **kwargs: Any) -> list[Error]:
    if settings.TIME_ZONE != "UTC" or not settings.USE_TZ:
        return [Error("TIME_ZONE must be UTC and USE_TZ True.", id="auditsvc.E001")]
    return []


@register(Tags.security, deploy=True)
def check_secret_key_configured(app_configs: Any, **kwargs: Any) -> list[Warning]:
    if not settings.SECRET_KEY_FROM_ENVIRONMENT:
        return [
            Warning(
                "SECRET_KEY is not set; a key generated into var/secret_key is in use.",
                hint="Set SECRET_KEY (or SECRET_KEY_FILE) in production: API keys are hashed with it.",
                id="auditsvc.W001",
            )
        ]
    return []


@register()
def check_trusted_proxies(app_configs: Any, **kwargs: Any) -> list[Error]:
    errors = []
    for proxy in settings.AUDITSVC_TRUSTED_PROXIES:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            errors.append(
                Error(
                    f"AUDITSVC_TRUSTED_PROXIES: {proxy!r} is not an IP address or network.",
                    hint="Comma-separated addresses or CIDR networks, e.g. 10.0.0.1,10.1.0.0/16.",
                    id="auditsvc.E002",
                )
            )
    return errors


@register(Tags.security)
def check_data_key(app_configs: Any, **kwargs: Any) -> list[Error]:
    """The master key of personal fields: required in production, well formed everywhere."""
    from django.core.exceptions import ImproperlyConfigured  # noqa: PLC0415

    from events import data_keys  # noqa: PLC0415

    try:
        data_keys.master_key()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), hint="manage.py create_data_key prints a new key.", id="auditsvc.E010")]
    return []


@register(Tags.database, Tags.security)
def check_database_role(app_configs: Any, **kwargs: Any) -> list[Warning]:
    """In production, the service must not connect as a role that can rewrite the record.

    Runs with every management command (and at gunicorn's start): the long-running ones and
    their health checks say it where an operator looks. Not in development, where the one
    role of the embedded database is both.
    """
    if not settings.PRODUCTION:
        return []
    if problem := database_roles.connection_role_problem():
        return [
            Warning(
                f"{problem}.",
                hint="Connect the service as a role of its own (docs/operations.md, 'Database roles'): "
                "manage.py grant_service_role gives it just what it needs.",
                id="auditsvc.W020",
            )
        ]
    return []

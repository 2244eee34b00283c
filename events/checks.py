"""System checks for configuration mistakes, with stable ids."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


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

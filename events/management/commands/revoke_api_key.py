from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.keys import revoke_api_key
from events.models import ApiKey


class Command(BaseCommand):
    help = "Revoke an API key by its prefix (the part after 'audit_'). Takes effect immediately."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix")

    def handle(self, *args: Any, prefix: str, **options: Any) -> None:
        prefix = prefix.removeprefix("audit_").split("_")[0]
        try:
            api_key = revoke_api_key(prefix=prefix)
        except ApiKey.DoesNotExist:
            raise CommandError(f"No API key with prefix '{prefix}'.") from None
        self.stdout.write(f"Revoked {api_key.prefix} (source {api_key.source.slug}) at {api_key.revoked_at}")

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.keys import create_api_key
from events.models import SCOPES, Source


class Command(BaseCommand):
    help = "Issue an API key for a source. The key is printed once and cannot be shown again."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--source", required=True, help="source slug (create it with create_source)")
        parser.add_argument("--scopes", default="ingest", help=f"comma-separated, from: {', '.join(SCOPES)}")
        parser.add_argument("--name", default="", help="a note to recognise the key by")

    def handle(self, *args: Any, source: str, scopes: str, name: str, **options: Any) -> None:
        try:
            owner = Source.objects.get(slug=source)
        except Source.DoesNotExist:
            raise CommandError(f"No source '{source}'. Create it with: manage.py create_source {source}") from None
        try:
            issued = create_api_key(source=owner, scopes=[s.strip() for s in scopes.split(",") if s.strip()], name=name)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(
            f"API key {issued.api_key.prefix} for source {owner.slug}, scopes {','.join(issued.api_key.scopes)}. "
            "Store it now: it is not shown again."
        )
        self.stdout.write(issued.plaintext)

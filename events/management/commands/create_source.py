from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.text import slugify

from events.models import Source


class Command(BaseCommand):
    help = "Register a service that may send events (a source)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="short unique name, e.g. billing")
        parser.add_argument("--name", default="", help="human name (default: the slug)")

    def handle(self, *args: Any, slug: str, name: str, **options: Any) -> None:
        if slugify(slug) != slug:
            raise CommandError(f"'{slug}' is not a valid slug (lowercase letters, digits, '-' and '_').")
        source, created = Source.objects.get_or_create(slug=slug, defaults={"name": name or slug})
        verb = "Created" if created else "Exists:"
        self.stdout.write(f"{verb} source {source.slug} ({source.name})")

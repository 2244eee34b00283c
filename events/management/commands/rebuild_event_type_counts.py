from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from events.ingest.type_counts import rebuild_event_type_counts


class Command(BaseCommand):
    help = "Recount each event type's event_count and last_seen_at from the events table (a full scan)."

    def handle(self, *args: Any, **options: Any) -> None:
        updated = rebuild_event_type_counts()
        self.stdout.write(f"Recounted {updated} event types.")

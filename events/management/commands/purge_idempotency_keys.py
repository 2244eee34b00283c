from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from events.ingest.idempotency import purge_expired_idempotency_keys


class Command(BaseCommand):
    help = "Delete idempotency keys older than the dedupe window (events are kept). Safe to run from cron."

    def handle(self, *args: Any, **options: Any) -> None:
        deleted = purge_expired_idempotency_keys()
        self.stdout.write(f"Deleted {deleted} expired idempotency keys.")

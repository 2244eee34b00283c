from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from events.sealing import seal_events


class Command(BaseCommand):
    help = (
        "Seal the committed events received since the last seal into chained, signed Merkle seals. "
        "Safe to run every minute from cron, and concurrently (a second run exits at once)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--lag", type=int, default=None, help="seconds; default AUDITSVC_SEAL_LAG_SECONDS")

    def handle(self, *args: Any, lag: int | None, **options: Any) -> None:
        seals = seal_events(lag_seconds=lag)
        if not seals:
            self.stdout.write("Nothing to seal (or another sealer is running).")
        for seal in seals:
            signed = "signed" if seal.signature else "unsigned"
            self.stdout.write(
                f"Seal {seal.sequence}: {seal.event_count} events, root {seal.merkle_root[:16]}…, {signed}"
            )

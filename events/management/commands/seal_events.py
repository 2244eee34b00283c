from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from events.integrity.autoseal import seal_periodically
from events.integrity.sealing import seal_events
from events.management.stopping import stop_requested_by_signal


class Command(BaseCommand):
    help = (
        "Seal the committed events received since the last seal into chained, signed Merkle seals. "
        "Once (cron, every minute), or --loop as a long-running sealer process: the only process that "
        "needs AUDIT_SIGNING_KEY. Safe to run concurrently (a second sealer waits its turn)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--lag", type=int, default=None, help="seconds; default AUDITSVC_SEAL_LAG_SECONDS")
        parser.add_argument("--loop", action="store_true", help="keep sealing until SIGTERM or Ctrl-C")
        parser.add_argument("--interval", type=float, default=10.0, help="seconds between runs with --loop")

    def handle(self, *args: Any, lag: int | None, loop: bool, interval: float, **options: Any) -> None:
        if loop:
            self._loop(interval)
            return
        seals = seal_events(lag_seconds=lag)
        if not seals:
            self.stdout.write("Nothing to seal (or another sealer is running).")
        for seal in seals:
            signed = "signed" if seal.signature else "unsigned"
            self.stdout.write(
                f"Seal {seal.sequence}: {seal.event_count} events, root {seal.merkle_root[:16]}…, {signed}"
            )

    def _loop(self, interval: float) -> None:
        stop = stop_requested_by_signal()
        self.stdout.write(f"Sealing every {interval:g} s; SIGTERM or Ctrl-C stops.")
        self.stdout.flush()
        seal_periodically(interval=interval, stop=stop, on_seal=self._say)
        self.stdout.write("Sealer stopped.")

    def _say(self, message: str) -> None:
        self.stdout.write(message)
        self.stdout.flush()

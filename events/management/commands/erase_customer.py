from __future__ import annotations

import getpass
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from auditsvc.errors import Unavailable
from customers.models import Customer
from events import erasure, protection


class Command(BaseCommand):
    help = (
        "Erase a customer's personal data: destroy the data keys their events' personal fields are "
        "encrypted under (those fields then read as [erased]), blank the customer's e-mail and name, "
        "and record an auditsvc.customer.erased event. Hashes, seals and proofs stay valid. "
        "Cannot be undone. See docs/privacy.md for what it guarantees and what it does not."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("external_id", help="the customer's external id, as events name it")
        parser.add_argument("--actor", default="", help="who asked (default: the operating-system user)")
        parser.add_argument(
            "--no-input", "--noinput", "--yes", action="store_false", dest="interactive",
            help="do not ask for confirmation (Django's convention; --yes is kept as an alias)",
        )  # fmt: skip

    def handle(self, *args: Any, external_id: str, actor: str, interactive: bool, **options: Any) -> None:
        if not Customer.objects.filter(external_id=external_id).exists():
            raise CommandError(f"No customer '{external_id}'.")
        if interactive:
            self._confirm(external_id)
        try:
            erased = erasure.erase_customer(external_id, actor=actor or f"cli:{getpass.getuser()}")
        except Unavailable as exc:
            raise CommandError(
                f"{external_id} is erased in the database, but the ingest stream could not be told ({exc.message}): "
                "run the command again once Redis answers, so that the stream's workers stop using the old key."
            ) from exc
        self.stdout.write(
            f"Erased {external_id}: {erased.keys_destroyed} data key(s) destroyed; the personal fields of "
            f"{erased.events} event(s) now read as {protection.ERASED}. Recorded as auditsvc.customer.erased."
        )
        if erased.keys_destroyed:
            self.stdout.write(
                "Run VACUUM events_customerdatakey so that PostgreSQL drops the old key rows from its files; "
                "backups taken before now still hold them until they expire (docs/privacy.md)."
            )

    def _confirm(self, external_id: str) -> None:
        cannot_ask = f"Nothing erased: there is no terminal to confirm on. Pass --no-input to erase {external_id}."
        if not sys.stdin or not sys.stdin.isatty():
            raise CommandError(cannot_ask)
        try:
            answer = input(f"Erase the personal data of {external_id}? It cannot be undone. [y/N] ")
        except EOFError:
            raise CommandError(cannot_ask) from None
        if answer.strip().lower() not in ("y", "yes"):
            raise CommandError("Nothing erased.")

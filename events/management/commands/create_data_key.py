from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from events import data_keys


class Command(BaseCommand):
    help = (
        "Print a new AUDITSVC_DATA_KEY (32 random bytes, base64): the master key that wraps the "
        "customers' data keys and keys the HMAC of sensitive fields. Keep it like the database "
        "password; losing it makes every personal field unreadable."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(data_keys.new_master_key())

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.keys import create_api_key, find_api_key
from events.models import SCOPE_INGEST, SCOPE_READ, Source

CURL_EXAMPLE = """\
curl -sS -X POST {url}/api/v1/events \\
  -H 'Authorization: Bearer {key}' \\
  -H 'Content-Type: application/json' \\
  -d '{{"type": "customer.created", "customer": "cus_42", "actor": "alice@example.com",
       "payload": {{"plan": "pro"}}}}'"""


DEV_ADMIN = "admin"


class Command(BaseCommand):
    help = (
        "Development only: make sure the 'demo' source has a key (kept in var/dev-api-key) and that a "
        "development superuser 'admin' exists (its random password kept in var/dev-admin-password); print both."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="base URL for the curl example")

    def handle(self, *args: Any, url: str, **options: Any) -> None:
        if settings.PRODUCTION:
            raise CommandError("ensure_dev_api_key is for development: it makes a key and a superuser.")
        path = Path(settings.AUDITSVC_DEV_API_KEY_FILE)
        key = path.read_text().strip() if path.exists() else ""
        api_key = find_api_key(key) if key else None
        if api_key is None or api_key.is_revoked or api_key.source.slug != "demo":
            source, _ = Source.objects.get_or_create(slug="demo", defaults={"name": "Demo service"})
            key = create_api_key(source=source, scopes=[SCOPE_INGEST, SCOPE_READ], name="development key").plaintext
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(key)
            path.chmod(0o600)
        self.stdout.write(
            f"\nDevelopment API key for source 'demo' (scopes: {SCOPE_INGEST}, {SCOPE_READ}):\n\n  {key}\n"
        )
        self.stdout.write("\nStore an event:\n\n" + CURL_EXAMPLE.format(url=url, key=key) + "\n")
        self.stdout.write(f"\nAdmin: {url}/admin/ {_dev_admin_login()}\n\n")


def _dev_admin_login() -> str:
    """Log-in instructions for the development superuser, made on first run."""
    path = Path(settings.AUDITSVC_DEV_ADMIN_PASSWORD_FILE)
    users = get_user_model().objects
    user = users.filter(username=DEV_ADMIN).first()
    if user is None:
        password = secrets.token_urlsafe(12)
        users.create_superuser(DEV_ADMIN, email="", password=password)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(password)
        path.chmod(0o600)
    else:
        password = path.read_text().strip() if path.exists() else ""
        if not user.check_password(password):  # an 'admin' of the developer's own
            return f"(log in as your own '{DEV_ADMIN}', or any user made with manage.py createsuperuser)"
    return f"user '{DEV_ADMIN}', password '{password}' (kept in {path})"

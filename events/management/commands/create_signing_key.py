from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.integrity import signing


class Command(BaseCommand):
    help = (
        "Make an Ed25519 seal-signing key: write the private key to --output (mode 0600; for "
        "AUDIT_SIGNING_KEY_FILE) and print its key id and public key (for AUDIT_PUBLIC_KEYS). "
        "--if-missing keeps an existing file and prints its public key."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", required=True, help="file to write the private key to")
        parser.add_argument("--format", choices=["pem", "base64"], default="pem", help="default: pem")
        parser.add_argument("--if-missing", action="store_true", help="do nothing if the file exists")

    def handle(self, *args: Any, output: str, format: str, if_missing: bool, **options: Any) -> None:
        path = Path(output)
        if path.exists():
            if not if_missing:
                raise CommandError(f"{path} exists; a new key would not verify old seals. Use another file.")
            key = signing.load_private_key(path.read_text(), name=str(path))
        else:
            key = Ed25519PrivateKey.generate()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(_private_text(key, format))
        public = key.public_key()
        self.stdout.write(f"Signing key {signing.key_id(public)} in {path}")
        self.stdout.write(f"Public key (hex, for AUDIT_PUBLIC_KEYS): {signing.public_key_bytes(public).hex()}")


def _private_text(key: Ed25519PrivateKey, format: str) -> str:
    if format == "base64":
        raw = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return base64.b64encode(raw).decode() + "\n"
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem.decode()

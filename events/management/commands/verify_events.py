from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from events.sealing import verify_integrity


class Command(BaseCommand):
    help = (
        "Recompute every event hash, every seal's Merkle root and the seal chain (and signatures). "
        "Exits non-zero on any finding; --json for machine-readable output."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", help="ISO 8601: only seals and events received from then on")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")

    def handle(self, *args: Any, since: str | None, json: bool, **options: Any) -> None:
        start = None
        if since:
            try:
                start = datetime.fromisoformat(since)
            except ValueError:
                raise CommandError(f"--since: not an ISO 8601 time: {since}") from None
            if start.tzinfo is None:
                raise CommandError("--since needs an offset, e.g. 2026-11-01T00:00:00Z")
        bar = tqdm(unit=" events", disable=json or not sys.stderr.isatty(), file=sys.stderr)
        report = verify_integrity(since=start, progress=bar.update)
        bar.close()
        if json:
            self.stdout.write(_json_dumps(report.as_dict()))
        else:
            for finding in report.findings:
                self.stdout.write(f"{finding.kind}: {finding.detail}")
            self.stdout.write(
                f"Checked {report.events_checked} events ({report.unsealed_events} not yet sealed) "
                f"and {report.seals_checked} seals: {'OK' if report.ok else f'{len(report.findings)} finding(s)'}."
            )
        if not report.ok:
            sys.exit(1)


def _json_dumps(value: Any) -> str:
    return json.dumps(value, indent=2)

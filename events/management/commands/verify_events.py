from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from auditsvc.times import parse_rfc3339
from events.integrity import signing
from events.integrity.verification import VerificationReport, verify_integrity


class Command(BaseCommand):
    help = (
        "Recompute every event hash, every seal's Merkle root and the seal chain, and check every seal's "
        "signature against the trusted public keys (a missing or foreign signature is a finding). "
        "Exits non-zero on any finding; --json for machine-readable output."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", help="ISO 8601: only seals and events received from then on")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")
        parser.add_argument(
            "--public-key",
            action="append",
            default=[],
            help="trust this Ed25519 public key (hex, base64 or PEM) instead of the configured ones; repeatable",
        )
        parser.add_argument(
            "--archive-dir",
            type=Path,
            help="where apply_retention wrote its archives: recheck every archived event against its seal",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=min(4, os.cpu_count() or 1),
            help="processes recomputing hashes and roots (default: one per CPU, at most 4)",
        )

    def handle(
        self,
        *args: Any,
        since: str | None,
        json: bool,
        public_key: list[str],
        workers: int,
        archive_dir: Path | None,
        **options: Any,
    ) -> None:
        if workers < 1:
            raise CommandError("--workers must be at least 1.")
        try:
            keys = {signing.key_id(k): k for text in public_key for k in signing.parse_public_keys(text)} or None
        except ValueError as exc:
            raise CommandError(f"--public-key: {exc}") from None
        start = None
        if since:
            try:
                start = parse_rfc3339(since)
            except ValueError:
                raise CommandError(
                    f"--since: not an RFC 3339 time with an offset (2026-11-01T00:00:00Z): {since}"
                ) from None
        bar = tqdm(unit=" events", disable=json or not sys.stderr.isatty(), file=sys.stderr)
        if archive_dir is not None and not archive_dir.is_dir():
            raise CommandError(f"--archive-dir: {archive_dir} is not a directory.")
        report = verify_integrity(
            since=start, progress=bar.update, public_keys=keys, workers=workers, archive_dir=archive_dir
        )
        bar.close()
        if json:
            self.stdout.write(_json_dumps(report.as_dict()))
        else:
            if not report.signatures_checked:
                self.stderr.write("Signatures not checked: no public key is configured or given (--public-key).")
            for finding in report.findings:
                self.stdout.write(f"{finding.kind}: {finding.detail}")
            if report.archived_events:
                self.stdout.write(_archived_line(report, archive_dir))
            self.stdout.write(
                f"Checked {report.events_checked} events ({report.unsealed_events} not yet sealed) "
                f"and {report.seals_checked} seals: {'OK' if report.ok else f'{len(report.findings)} finding(s)'}."
            )
        if not report.ok:
            sys.exit(1)


def _archived_line(report: VerificationReport, archive_dir: Path | None) -> str:
    if archive_dir is None:
        return (
            f"{report.archived_events} sealed events were archived by retention and not rechecked "
            "(their seals and roots were; give --archive-dir to recheck the events)."
        )
    return (
        f"{report.archived_events} sealed events were archived by retention; {report.archived_rechecked} "
        f"rechecked from {report.archives_checked} archive(s) in {archive_dir}."
    )


def _json_dumps(value: Any) -> str:
    return json.dumps(value, indent=2)

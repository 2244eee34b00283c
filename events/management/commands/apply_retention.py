from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from events import database_roles
from events.lifecycle.retention import RetentionRefused, apply_retention, due_partitions, retention_cutoff


class Command(BaseCommand):
    help = (
        "Retire every partition of events wholly older than AUDITSVC_RETENTION_DAYS: write its events to "
        "DIR/events-YYYY-MM.ndjson.gz with a manifest (count, first and last id, SHA-256, the covering seals), "
        "read the archive back against the seals, then detach and drop the partition. Recorded as an "
        "auditsvc.retention.applied event. Run it daily from cron."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--archive-dir", type=Path, help="where the archives and manifests go")
        parser.add_argument(
            "--no-archive",
            action="store_true",
            help="drop without an archive (the seals stay; nothing can be rechecked)",
        )
        parser.add_argument("--dry-run", action="store_true", help="list what would be retired; change nothing")

    def handle(self, *args: Any, archive_dir: Path | None, no_archive: bool, dry_run: bool, **options: Any) -> None:
        if settings.AUDITSVC_RETENTION_DAYS is None:
            self.stdout.write("AUDITSVC_RETENTION_DAYS is not set: every event is kept. Nothing to do.")
            return
        if archive_dir is None and not no_archive and not dry_run:
            raise CommandError("Give --archive-dir DIR, or --no-archive to drop partitions without an archive.")
        if archive_dir is not None and no_archive:
            raise CommandError("--archive-dir and --no-archive exclude each other.")
        cutoff = retention_cutoff()
        assert cutoff is not None
        due = due_partitions(cutoff)
        keep = f"Keeping {settings.AUDITSVC_RETENTION_DAYS} days: events received before {cutoff:%Y-%m-%d %H:%M} UTC"
        if not due:
            self.stdout.write(f"{keep}; no partition lies wholly before that. Nothing to do.")
            return
        self.stdout.write(f"{keep}; {len(due)} partition(s) lie wholly before that:")
        for partition in due:
            self.stdout.write(f"  {partition.table} ({partition.span})")
        if dry_run:
            self.stdout.write("Dry run: nothing changed.")
            return
        if not database_roles.may_change_the_schema():
            raise CommandError(
                "Retention detaches and drops partitions, which only the tables' owner may: run apply_retention "
                "with the owner's DATABASE_URL and AUDITSVC_DATABASE_ROLE=owner (docs/operations.md, 'Database roles')."
            )
        bar = tqdm(unit=" events", desc="archive check", disable=not sys.stderr.isatty(), file=sys.stderr)
        try:
            report = apply_retention(archive_dir=archive_dir, progress=bar.update)
        except RetentionRefused as exc:
            raise CommandError(str(exc)) from None
        finally:
            bar.close()
        for retired in report.retired:
            where = f"archived to {archive_dir / retired.archive}" if archive_dir and retired.archive else "no archive"
            self.stdout.write(f"Retired {retired.partition.table}: {retired.events} events, {where}.")

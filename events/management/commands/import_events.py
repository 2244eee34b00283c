from __future__ import annotations

import csv
import signal
import sys
from pathlib import Path
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from events.ingest.formats import FORMATS, bytes_read, open_input
from events.ingest.importing import (
    SERVICE_SOURCE_REFUSED,
    Importer,
    ImportFailed,
    ImportStats,
    Reject,
    default_workers,
    refresh_statistics,
)
from events.models import SERVICE_SOURCE, Source


class Command(BaseCommand):
    help = (
        "Import events from NDJSON, CSV or CloudEvents (PATH, '-' for stdin, .gz allowed) through the same "
        "validation and write path as the API. Bad records go to a rejects file; re-running stores nothing twice."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="file to read, or - for stdin; gzip is detected")
        parser.add_argument("--source", help="store every record as this source (else each record's own 'source')")
        parser.add_argument("--format", choices=FORMATS, help="default: csv for *.csv[.gz], else ndjson")
        parser.add_argument("--batch-size", type=int, default=5000)
        parser.add_argument("--rejects", help="where rejected records go (default: <path>.rejects.ndjson)")
        parser.add_argument(
            "--workers",
            type=int,
            default=default_workers(),
            help=f"processes that validate and store (default: one per CPU, at most 4: {default_workers()} here)",
        )

    def handle(self, *args: Any, path: str, batch_size: int, workers: int, **options: Any) -> None:
        export_format = options["format"] or (
            "csv" if Path(path).name.removesuffix(".gz").endswith(".csv") else "ndjson"
        )
        if batch_size < 1 or workers < 1:
            raise CommandError("--batch-size and --workers must be at least 1")
        rejects = _RejectsFile(
            Path(options["rejects"] or ("rejects.ndjson" if path == "-" else f"{path}.rejects.ndjson"))
        )
        importer = Importer(
            default_source=_source(options["source"]), batch_size=batch_size, on_reject=rejects.add, workers=workers
        )
        try:
            stream = open_input(path)
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc}") from None
        try:
            stats = self._run(importer, stream, export_format, size=None if path == "-" else Path(path).stat().st_size)
        finally:
            rejects.close()
        if refresh_statistics(stats.stored):
            self.stderr.write("Refreshed the planner's statistics of the events table (ANALYZE).", style_func=str)
        self.stdout.write(f"{path}: {stats.summary()}")
        if stats.rejected:
            self.stdout.write(f"Rejected records, with line numbers and errors: {rejects.path}")
        if stats.interrupted:
            self.stdout.write("Stopped by Ctrl-C after storing the records read; run again to continue.")
        if stats.rejected or stats.interrupted:
            sys.exit(1)

    def _run(self, importer: Importer, stream: IO[bytes], export_format: str, *, size: int | None) -> ImportStats:
        """The import with a progress bar on a terminal (records, rate, ETA) and Ctrl-C handling."""
        stop = _StopFlag(self.stderr)
        progress = tqdm(unit=" records", disable=not self.stdout.isatty(), file=sys.stdout, dynamic_ncols=True)

        def on_progress(records: int) -> None:
            # The number of records is unknown until the end: estimate it from the records read
            # so far and the share of the file they took.
            position = bytes_read(stream)
            if size and position:
                progress.total = max(importer.stats.read, round(importer.stats.read * size / position))
            progress.update(records)

        try:
            return importer.run(stream, export_format, stop=lambda: stop.requested, progress=on_progress)
        except ImportFailed as exc:
            so_far = importer.stats.summary()
            raise CommandError(f"Import stopped: {exc}\nSo far: {so_far}. Run again to continue.") from None
        except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:  # a truncated .gz, a binary file
            so_far = importer.stats.summary()
            raise CommandError(f"Import stopped, the input is unreadable: {exc}\nSo far: {so_far}.") from None
        except KeyboardInterrupt:
            so_far = importer.stats.summary()
            raise CommandError(
                "Aborted by a second Ctrl-C: the batches being stored were rolled back.\n"
                f"So far (at least): {so_far}. Run again to finish; nothing is stored twice."
            ) from None
        finally:
            stop.restore()
            progress.close()
            stream.close()


def _source(slug: str | None) -> Source | None:
    if not slug:
        return None
    if slug == SERVICE_SOURCE:
        raise CommandError(SERVICE_SOURCE_REFUSED)
    source = Source.objects.filter(slug=slug).first()
    if source is None:
        raise CommandError(f"No source '{slug}'. Create it with: manage.py create_source {slug}")
    return source


class _RejectsFile:
    """The rejects file, created only when a record is rejected."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def add(self, reject: Reject) -> None:
        if self._file is None:
            self._file = self.path.open("wb")
        self._file.write(reject.as_json() + b"\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _StopFlag:
    """A first Ctrl-C asks the import to stop once what was read is stored; a second aborts."""

    def __init__(self, stderr: Any) -> None:
        self.requested = False
        self._stderr = stderr
        self._previous = signal.signal(signal.SIGINT, self._request)

    def _request(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._stderr.write("\nStopping once the records read so far are stored (Ctrl-C again to abort now)…")

    def restore(self) -> None:
        signal.signal(signal.SIGINT, self._previous)

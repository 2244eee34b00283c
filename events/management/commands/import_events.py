from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from events.importing import FORMATS, Importer, Reject, open_input
from events.models import Source


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

    def handle(self, *args: Any, path: str, source: str | None, batch_size: int, **options: Any) -> None:
        export_format = options["format"] or (
            "csv" if Path(path).name.removesuffix(".gz").endswith(".csv") else "ndjson"
        )
        default_source = None
        if source:
            default_source = Source.objects.filter(slug=source).first()
            if default_source is None:
                raise CommandError(f"No source '{source}'. Create it with: manage.py create_source {source}")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        rejects_path = Path(options["rejects"] or ("rejects.ndjson" if path == "-" else f"{path}.rejects.ndjson"))
        rejects_file: IO[bytes] | None = None

        def on_reject(reject: Reject) -> None:
            nonlocal rejects_file
            if rejects_file is None:
                rejects_file = rejects_path.open("wb")
            rejects_file.write(reject.as_json() + b"\n")

        importer = Importer(default_source=default_source, batch_size=batch_size, on_reject=on_reject)
        stop = _StopFlag()
        try:
            stream = open_input(path)
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc}") from None
        interactive = self.stdout.isatty()
        progress = tqdm(unit=" records", disable=not interactive, file=sys.stdout, dynamic_ncols=True)
        try:
            stats = importer.run(stream, export_format, stop=lambda: stop.requested, progress=progress.update)
        finally:
            stop.restore()
            progress.close()
            stream.close()
            if rejects_file is not None:
                rejects_file.close()
        self.stdout.write(f"{path}: {stats.summary()}")
        if stats.rejected:
            self.stdout.write(f"Rejected records, with line numbers and errors: {rejects_path}")
        if stats.interrupted:
            self.stdout.write("Stopped by Ctrl-C after storing the current batch; run again to continue.")
        if stats.rejected or stats.interrupted:
            sys.exit(1)


class _StopFlag:
    """Ctrl-C asks the import to stop after the current batch instead of killing it mid-way."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = signal.signal(signal.SIGINT, self._request)

    def _request(self, signum: int, frame: Any) -> None:
        self.requested = True

    def restore(self) -> None:
        signal.signal(signal.SIGINT, self._previous)

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.http import QueryDict
from tqdm import tqdm

from auditsvc.counting import bounded_count
from auditsvc.errors import ProblemError
from events.api.filters import EventFilterSet
from events.export import FORMATS, stream_events
from events.queries import events_queryset

# Command-line option → API filter name (the same FilterSet as GET /api/v1/events).
FILTER_OPTIONS = {
    "type": "type",
    "type_prefix": "type_prefix",
    "source": "source",
    "customer": "customer",
    "actor": "actor",
    "occurred_after": "occurred_after",
    "occurred_before": "occurred_before",
    "received_after": "received_after",
    "received_before": "received_before",
    "payload": "payload",
    "q": "q",
}


class Command(BaseCommand):
    help = "Export events as NDJSON or CSV, streamed in constant memory, with the API's filters."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=FORMATS, default="ndjson")
        parser.add_argument("--output", default="-", help="file to write, or - for stdout (default)")
        parser.add_argument("--type", action="append", help="repeatable")
        parser.add_argument("--type-prefix")
        parser.add_argument("--source", action="append", help="repeatable")
        parser.add_argument("--customer", help="external id or system:id")
        parser.add_argument("--actor")
        parser.add_argument("--occurred-after", help="ISO 8601, inclusive")
        parser.add_argument("--occurred-before", help="ISO 8601, exclusive")
        parser.add_argument("--received-after")
        parser.add_argument("--received-before")
        parser.add_argument("--payload", help='JSON containment, e.g. \'{"plan": "pro"}\'')
        parser.add_argument("--q", help="words of the description")

    def handle(self, *args: Any, output: str, **options: Any) -> None:
        data = QueryDict(mutable=True)
        for option, name in FILTER_OPTIONS.items():
            value = options.get(option)
            if value:
                data.setlist(name, value if isinstance(value, list) else [value])
        filterset = EventFilterSet(data, queryset=events_queryset())
        if not filterset.is_valid():
            raise CommandError(f"Invalid filters: {dict(filterset.errors)}")
        try:
            events = filterset.qs.order_by("-occurred_at", "-id")
        except ProblemError as exc:
            raise CommandError("; ".join(f"{e.field}: {e.message}" for e in exc.errors)) from None
        target: IO[bytes] = sys.stdout.buffer if output == "-" else Path(output).open("wb")  # noqa: SIM115
        show_progress = output != "-" and sys.stderr.isatty()
        # The total is an estimate (the planner's, past a few thousand): enough for an ETA.
        total = bounded_count(events)[0] if show_progress else None
        progress = tqdm(total=total, unit=" events", disable=not show_progress, file=sys.stderr, dynamic_ncols=True)
        exported = 0
        try:
            for chunk in stream_events(events, export_format=options["format"]):
                target.write(chunk)
                lines = chunk.count(b"\n")
                exported += lines
                if progress.total is not None and progress.n + lines > progress.total:
                    progress.total = None  # the estimate was low: show the count and rate only
                progress.update(lines)
        finally:
            progress.close()
            if target is not sys.stdout.buffer:
                target.close()
        if options["format"] == "csv":
            exported -= 1  # the header line
        if output != "-":
            self.stderr.write(f"Exported {exported} events to {output}.", style_func=str)

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from events.lifecycle.partitions import PartitionState, ensure_ahead, partition_states


class Command(BaseCommand):
    help = (
        "Make the monthly partitions of events_event for this month and the next --ahead months (run it daily "
        "from cron; make run does it at start), then list every partition with its range, rows, size and how "
        "much of it is sealed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--ahead", type=int, default=3, help="Months after this one to have ready (default 3).")
        parser.add_argument("--no-list", action="store_true", help="Only make the partitions; print one line.")
        parser.add_argument("--exact", action="store_true", help="Count rows exactly (reads every partition).")

    def handle(self, *args: Any, **options: Any) -> None:
        ahead = options["ahead"]
        if ahead < 0:
            self.stderr.write("--ahead must be 0 or more.")
            raise SystemExit(2)
        created = ensure_ahead(ahead)
        made = ", ".join(str(m) for m in created) if created else "none needed"
        self.stdout.write(f"Partitions made for the months ahead: {made}.")
        if options["no_list"]:
            return
        states = partition_states(exact=options["exact"])
        self.stdout.write(f"{'partition':<28} {'months':<22} {'rows':>14} {'size':>10} {'sealed':>8}")
        for state in states:
            self.stdout.write(_row(state))
        total = sum(s.rows for s in states)
        self.stdout.write(f"{len(states)} partitions, {total:,} events{'' if options['exact'] else ' (estimated)'}.")


def _row(state: PartitionState) -> str:
    rows = f"{state.rows:,}" if state.rows_exact else f"~{state.rows:,}"
    share = state.sealed_share
    sealed = "-" if share is None else f"{share:.1%}"
    return f"{state.partition.table:<28} {state.partition.span:<22} {rows:>14} {_size(state.bytes):>10} {sealed:>8}"


def _size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"

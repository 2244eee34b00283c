from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from events.ingest import stream
from events.ingest.drain import Drainer, DrainReport
from events.management.stopping import stop_requested_by_signal


class Command(BaseCommand):
    help = (
        "Stream mode: store the events accepted into the Redis stream, acknowledging each after its "
        "commit. Long-running until SIGTERM or Ctrl-C; --once drains what is there and exits. Run "
        "several at once (one per shard, or more): they share the work as one consumer group."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="drain what is there now, then exit")
        parser.add_argument(
            "--shard", type=int, action="append", dest="shards", help="serve this shard (repeatable); default all"
        )
        parser.add_argument("--consumer", help="consumer name; default <hostname>-<pid>")
        parser.add_argument("--batch", type=int, default=None, help="entries per read; default AUDITSVC_STREAM_BATCH")

    def handle(
        self, *args: Any, once: bool, shards: list[int] | None, consumer: str | None, batch: int | None, **options: Any
    ) -> None:
        if problem := stream.durability_problem():
            raise CommandError(problem)
        drainable = stream.shards_to_drain()
        if not drainable:
            raise CommandError(
                "AUDITSVC_INGEST_MODE is not 'stream', and no stream under AUDITSVC_STREAM_PREFIX holds entries: "
                "there is nothing to drain."
            )
        if shards and any(shard not in drainable for shard in shards):
            choices = ", ".join(map(str, drainable))
            raise CommandError(f"--shard must be one of {choices} (the shards in use or stranded).")
        stop = stop_requested_by_signal()
        drainer = Drainer(sorted(set(shards)) if shards else drainable, consumer=consumer, batch=batch, stop=stop)
        served = ", ".join(str(shard) for shard in drainer.shards)
        if once:
            waiting = sum(state.entries for state in stream.shard_states(drainer.shards))
            with tqdm(total=waiting, unit="event", desc="Draining", disable=None) as bar:

                def advance(step: DrainReport) -> None:
                    bar.update(_moved(step))

                report = drainer.run(once=True, on_batch=advance)
        else:
            self.stdout.write(f"Draining shard(s) {served} as {drainer.consumer}; SIGTERM or Ctrl-C stops.")
            self.stdout.flush()
            report = drainer.run(on_batch=_Progress(self).step)
        self.stdout.write(
            f"Stored {report.stored} events, {report.duplicates} already stored, {report.dead} dead-lettered."
        )


def _moved(report: DrainReport) -> int:
    return report.stored + report.duplicates + report.dead


class _Progress:
    """A line every 10 s while events flow: how many, and the lag left."""

    def __init__(self, command: BaseCommand) -> None:
        self.command = command
        self.since = time.monotonic()
        self.window = DrainReport()

    def step(self, report: DrainReport) -> None:
        self.window.add(report)
        elapsed = time.monotonic() - self.since
        if elapsed < 10:
            return
        lag = stream.total_lag(stream.shard_states())
        self.command.stdout.write(
            f"{self.window.stored / elapsed:,.0f} events/s stored, {self.window.dead} dead-lettered; "
            f"lag {lag.entries} entries, oldest {lag.oldest_seconds:.1f} s"
        )
        self.command.stdout.flush()
        self.since, self.window = time.monotonic(), DrainReport()

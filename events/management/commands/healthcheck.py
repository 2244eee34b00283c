from __future__ import annotations

from typing import Any

import redis
from django.core.management.base import BaseCommand, CommandParser

from events import health_checks


class Command(BaseCommand):
    help = (
        "Exit 0 when the database answers and the checks asked for pass, else 1 with the reason: "
        "--sealer (no event waits longer than --max-seal-lag for a seal; events gone before their seal are "
        "named as a warning), --drainer (no stream entry waits "
        "longer than --max-stream-lag), --partitions (next month's partition exists). For container health "
        "checks (docker-compose.yml) and cron monitors."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--sealer", action="store_true", help="The sealer keeps up.")
        parser.add_argument("--drainer", action="store_true", help="Stream mode: the drainers keep up.")
        parser.add_argument("--partitions", action="store_true", help="Next month's partition exists.")
        parser.add_argument("--max-seal-lag", type=float, default=300.0, help="Seconds (default 300).")
        parser.add_argument("--max-stream-lag", type=float, default=120.0, help="Seconds (default 120).")

    def handle(self, *args: Any, **options: Any) -> None:
        problems = [health_checks.database_problem()]
        if problems[0] is None:
            if options["sealer"]:
                problems.append(health_checks.seal_problem(options["max_seal_lag"]))
                warning = health_checks.lost_events_warning()
                if warning:
                    self.stderr.write(f"warning: {warning}")
            if options["partitions"]:
                problems.append(health_checks.partition_problem())
        if options["drainer"]:
            try:
                problems.append(health_checks.stream_problem(options["max_stream_lag"]))
            except redis.RedisError as exc:
                problems.append(f"the stream's Redis is unreachable: {exc}")
        found = [problem for problem in problems if problem]
        for problem in found:
            self.stderr.write(f"unhealthy: {problem}")
        if found:
            raise SystemExit(1)
        self.stdout.write("healthy")

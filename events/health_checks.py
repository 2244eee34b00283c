"""Health of the processes besides the web workers, for container health checks and cron
monitors (manage.py healthcheck): each check says what is wrong, or nothing.

A loop process is healthy when its work is done on time, not merely when it runs: the sealer
when no event waits for a seal too long, the drainer when no accepted entry waits too long,
the daily jobs when next month's partition exists.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import DatabaseError, connection

from events.ingest import stream
from events.integrity.sealing import held_back_events, lost_events, oldest_unsealed_age_seconds
from events.lifecycle.partitions import Month, partitions


def database_problem() -> str | None:
    try:
        connection.ensure_connection()
    except DatabaseError as exc:
        return f"the database is unreachable: {exc}".strip()
    return None


def seal_problem(max_lag_seconds: float) -> str | None:
    held, first = held_back_events()
    if held:
        return (
            f"{held} events are queued for a seal at a time still to come, so the sealer never takes them "
            f"(events_pendingseal was changed; verify_events names each): {', '.join(first)}"
        )
    age = oldest_unsealed_age_seconds()
    if age is not None and age > max_lag_seconds:
        return (
            f"the oldest unsealed event waits for {age:.0f} s (more than {max_lag_seconds:.0f} s): "
            "is the sealer running?"
        )
    return None


def lost_events_warning() -> str | None:
    """Not a reason to restart the sealer (it has moved on): a loss for a person to look into."""
    count, first = lost_events()
    if not count:
        return None
    more = f" and {count - len(first)} more" if count > len(first) else ""
    return (
        f"{count} acknowledged events were gone before their seal (events_lostevent; verify_events reports "
        f"each): {', '.join(first)}{more}"
    )


def stream_problem(max_lag_seconds: float) -> str | None:
    if not stream.is_enabled():
        return None
    lag = stream.total_lag(stream.shard_states())
    if lag.entries and lag.oldest_seconds > max_lag_seconds:
        return (
            f"{lag.entries} stream entries wait, the oldest for {lag.oldest_seconds:.0f} s "
            f"(more than {max_lag_seconds:.0f} s): is the drainer running?"
        )
    return None


def partition_problem(now: datetime | None = None) -> str | None:
    next_month = Month.of(now or datetime.now(UTC)).plus(1)
    if not any(partition.covers(next_month) for partition in partitions()):
        return f"no partition for {next_month} yet: run manage.py partitions (daily, from cron)"
    return None

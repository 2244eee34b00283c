"""The partitioning migration on a database filled before it (run as `manage.py migrate`)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.types.json import Jsonb

from events.ids import uuid7
from events.lifecycle.partitions import Month
from tests.paths import REPO_ROOT
from tests.processes import database_url

pytestmark = pytest.mark.django_db


def _uuid7_at(instant: datetime) -> uuid.UUID:
    millis = int(instant.timestamp() * 1000)
    return uuid.UUID(int=(millis << 80) | (uuid7().int & ((1 << 80) - 1)))


# Two old events, one of this month, and two random (v4) ids an import of another system's
# UUIDs could have stored: one sorts among the old ones, one far beyond every month.
LOW_V4 = uuid.UUID("00000000-0000-4000-8000-000000000001")
HIGH_V4 = uuid.UUID("c1a2b3c4-d5e6-4f70-8899-aabbccddeeff")
OLD = [_uuid7_at(datetime(2025, 1, 15, tzinfo=UTC)), _uuid7_at(datetime(2025, 6, 30, 23, 59, tzinfo=UTC))]
NOW = [uuid7()]
IDS = [LOW_V4, *OLD, *NOW, HIGH_V4]


@pytest.fixture
def scratch_database() -> Iterator[str]:
    name = f"auditsvc_migration_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url(), autocommit=True) as server:
        server.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            server.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _migrate(url: str, *target: str) -> None:
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0", *target], cwd=REPO_ROOT, env=env, check=True
    )


def _fill(db: psycopg.Connection) -> None:
    db.execute("INSERT INTO events_source (slug, name, description, is_active) VALUES ('legacy', 'Legacy', '', true)")
    db.execute("INSERT INTO events_eventtype (name, description, event_count) VALUES ('user.login', '', 0)")
    for n, event_id in enumerate(IDS):
        db.execute(
            "INSERT INTO events_event (id, type_id, source_id, actor, occurred_at, received_at, payload, hash)"
            " SELECT %s, t.id, s.id, %s, now(), now(), %s, %s FROM events_eventtype t, events_source s",
            [event_id, f"actor-{n}", Jsonb({"n": n}), f"{n:064x}"],
        )


def test_a_filled_table_becomes_partitions_and_keeps_every_row(scratch_database):
    url = database_url(scratch_database)
    _migrate(url, "events", "0011")
    with psycopg.connect(url, autocommit=True) as db:
        _fill(db)
        before = db.execute("SELECT * FROM events_event ORDER BY id").fetchall()

    _migrate(url)

    this_month = Month.of(datetime.now(UTC))
    with psycopg.connect(url, autocommit=True) as db:
        assert db.execute("SELECT relkind FROM pg_class WHERE relname = 'events_event'").fetchone() == ("p",)
        # The columns of 0011, as they were (later migrations add columns, null for these rows).
        kept = db.execute("SELECT * FROM events_event ORDER BY id").fetchall()
        assert [row[: len(before[0])] for row in kept] == before
        placed: dict[uuid.UUID, str] = dict(
            db.execute("SELECT id, tableoid::regclass::text FROM events_event").fetchall()
        )
        assert {placed[i] for i in [LOW_V4, *OLD, *NOW]} == {"events_event_legacy"}
        assert placed[HIGH_V4] == "events_event_legacy_tail"
        bounds: dict[str, str] = dict(
            db.execute(
                "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
                " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events_event'::regclass"
            ).fetchall()
        )
        assert bounds["events_event_legacy"] == f"FOR VALUES FROM (MINVALUE) TO ('{this_month.upper}')"
        assert bounds["events_event_legacy_tail"] == f"FOR VALUES FROM ('{Month.of_id(HIGH_V4).lower}') TO (MAXVALUE)"
        for ahead in (1, 2, 3):
            assert this_month.plus(ahead).table in bounds
        # The legacy indexes were attached to the parent's, not built again beside them.
        indexes = db.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'events_event_legacy'").fetchone()
        assert indexes == (10,)
        # The append-only rules hold on the converted rows, and a partition cannot be truncated by name.
        for statement in (
            "UPDATE events_event SET actor = 'x'",
            "DELETE FROM events_event_legacy",
            "TRUNCATE events_event_legacy",
            "TRUNCATE events_event_legacy_tail",
            "TRUNCATE events_event",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                db.execute(statement)
        # New events go to their month's partition.
        next_id = _uuid7_at(this_month.next().start)
        db.execute(
            "INSERT INTO events_event (id, type_id, source_id, occurred_at, received_at, payload, hash)"
            " SELECT %s, t.id, s.id, now(), now(), '{}', %s FROM events_eventtype t, events_source s",
            [next_id, "f" * 64],
        )
        placed_new = db.execute("SELECT tableoid::regclass::text FROM events_event WHERE id = %s", [next_id]).fetchone()
        assert placed_new == (this_month.next().table,)

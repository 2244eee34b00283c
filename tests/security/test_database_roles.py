"""The service's database role can append to the record but never rewrite it (issue 24, item 3),
and the service works as that role: ingest, reads, sealing, verification, an import that
needs a new month's partition, the daily jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from events import privacy_generation
from events.data_keys import data_keys_for_writing
from events.database_roles import APPEND_ONLY_TABLES, READ_ONLY_TABLES
from events.integrity.sealing import seal_events
from events.integrity.verification import verify_integrity
from events.keys import create_api_key
from events.lifecycle.partitions import Month, partitions, refusing_writes
from events.models import CustomerDataKey, Event, RetiredPartition, Seal
from tests.factories import SourceFactory
from tests.paths import REPO_ROOT
from tests.processes import database_url, gunicorn, http_json
from tests.test_deployment import DATA_KEY, PUBLIC_KEY, environment

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def service_role(transactional_db: None) -> Iterator[str]:
    """A login role with the rights grant_service_role gives; yields its DATABASE_URL."""
    role = f"{connection.settings_dict['NAME']}_service"
    with connection.cursor() as cursor:
        cursor.execute(f"DROP OWNED BY {role}" if _exists(role) else "SELECT 1")
        cursor.execute(f"DROP ROLE IF EXISTS {role}")
        cursor.execute(f"CREATE ROLE {role} LOGIN")
    call_command("grant_service_role", role, verbosity=0)
    parts = urlsplit(database_url())
    yield urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")))
    connection.close()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP OWNED BY {role}")
        cursor.execute(f"DROP ROLE {role}")


def _exists(role: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
        return cursor.fetchone() is not None


def a_column_of(table: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s LIMIT 1", [table])
        return connection.ops.quote_name(cursor.fetchone()[0])


def refusal(url: str, statement: str) -> str:
    """The error PostgreSQL answers statement with, run as url's role; '' if it ran."""
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            return str(exc)
    return ""


def test_it_cannot_rewrite_events_seals_or_retirements(service_role, api):
    api.post_json("/api/v1/events", {"type": "user.login", "actor": "u1"})
    seal_events(lag_seconds=0)
    assert Seal.objects.exists()
    this_month = Month.of(Event.objects.get().received_at).table
    tables = [*APPEND_ONLY_TABLES, *READ_ONLY_TABLES, this_month]
    for table in tables:
        column = a_column_of(table)
        statements = {
            "UPDATE": f"UPDATE {table} SET {column} = {column}",  # noqa: S608 - names of our own list
            "DELETE": f"DELETE FROM {table}",  # noqa: S608
            "TRUNCATE": f"TRUNCATE {table}",
            "ALTER": f"ALTER TABLE {table} ADD COLUMN forged integer",
            "DISABLE TRIGGER": f"ALTER TABLE {table} DISABLE TRIGGER ALL",
            "DROP": f"DROP TABLE {table}",
        }
        for what, statement in statements.items():
            # The privilege refuses it, not an append-only trigger that a next step could disable.
            error = refusal(service_role, statement)
            assert "permission denied" in error or "must be owner" in error, (table, what, error)
    assert "permission denied" in refusal(service_role, "SET session_replication_role = replica")
    assert "must be owner" in refusal(service_role, f"ALTER TABLE events_event DETACH PARTITION {this_month}")
    for table in READ_ONLY_TABLES:
        error = refusal(service_role, f"INSERT INTO {table} SELECT * FROM {table} LIMIT 0")  # noqa: S608
        assert "permission denied" in error, (table, error)
    # The one DDL it may cause makes a month's partition and nothing else.
    assert "no partition for month" in refusal(service_role, "SELECT auditsvc_create_month_partition(2026, 13)")
    assert Event.objects.count() == 1 and Seal.objects.count() == 1


def test_the_partition_function_cannot_be_steered_through_a_temporary_table(service_role):
    """SECURITY DEFINER runs as the owner: a temporary table of the caller's, searched first,
    must not stand in for the retirements (PostgreSQL's "Writing SECURITY DEFINER Functions Safely")."""
    retired = Month(2025, 1)
    RetiredPartition.objects.create(table=retired.table, lower_id=retired.lower, upper_id=retired.upper,
                                    retired_at=timezone.now(), event_count=0)  # fmt: skip
    with psycopg.connect(service_role, autocommit=True) as conn:
        conn.execute("CREATE TEMPORARY TABLE events_retiredpartition (lower_id uuid, upper_id uuid)")
        with pytest.raises(psycopg.Error, match="was removed by retention"):
            conn.execute("SELECT auditsvc_create_month_partition(2025, 1)")
        # Nor a temporary table standing in for events_event.
        conn.execute("CREATE TEMPORARY TABLE events_event (id uuid) PARTITION BY RANGE (id)")
        made = conn.execute("SELECT auditsvc_create_month_partition(2031, 7)").fetchone()
    assert made == ("events_event_y2031m07",)
    assert "events_event_y2031m07" in {p.table for p in partitions()}
    assert retired.table not in {p.table for p in partitions()}


def test_the_service_works_as_that_role(service_role, tmp_path: Path):
    source = SourceFactory.create(slug="billing")
    key = create_api_key(source=source, scopes=["ingest", "read"]).plaintext
    env = {**os.environ, "DATABASE_URL": service_role, "AUDITSVC_SEAL_LAG_SECONDS": "0"}
    auth = f"Bearer {key}"
    with gunicorn(DATABASE_URL=service_role) as base:
        single = http_json(f"{base}/api/v1/events", {"type": "user.login", "actor": "u1"}, Authorization=auth)
        logins = [{"type": "user.login", "actor": f"u{n}"} for n in range(2, 5)]
        batch = http_json(f"{base}/api/v1/events", {"events": logins}, Authorization=auth)
        listed = http_json(f"{base}/api/v1/events", Authorization=auth)
    assert single[0] == 201, single
    assert batch[0] == 201, batch
    assert listed[0] == 200 and len(listed[1]["results"]) == 4

    # An import into a month that has no partition yet: made on demand, through the function.
    old = Month(2019, 3)
    assert old.table not in {p.table for p in partitions()}
    records = tmp_path / "old.ndjson"
    records.write_text(
        json.dumps({"type": "user.login", "source": "billing", "actor": "u9", "received_at": "2019-03-04T05:06:07Z"})
        + "\n"
    )

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip

    for command in (["import_events", str(records)], ["seal_events"], ["verify_events"], ["partitions", "--no-list"],
                    ["partitions", "--exact"], ["purge_idempotency_keys"], ["healthcheck", "--sealer"]):  # fmt: skip
        run = manage(*command)
        assert run.returncode == 0, (command, run.stdout[-2000:], run.stderr[-2000:])
    assert old.table in {p.table for p in partitions()}
    assert Event.objects.filter(source=source).count() == 5  # (the audited read is the service's own)
    assert Event.objects.filter(source=source, received_at__year=2019).count() == 1
    assert not Event.objects.filter(id__in=_unsealed_ids()).exists()

    # Retention changes the schema: refused to this role, before anything is closed or archived.
    retire = subprocess.run([sys.executable, "manage.py", "apply_retention", "--archive-dir", str(tmp_path)],
                            cwd=REPO_ROOT, env={**env, "AUDITSVC_RETENTION_DAYS": "400"}, capture_output=True,
                            text=True, timeout=120, check=False)  # fmt: skip
    assert retire.returncode == 1 and "only the tables' owner may" in retire.stderr, retire.stderr[-2000:]
    assert old.table in {p.table for p in partitions()} and old.table not in refusing_writes()
    assert not list(tmp_path.glob("*.gz"))


def test_it_reads_and_moves_the_privacy_generation_but_cannot_delete_it(service_role):
    with psycopg.connect(service_role) as conn:  # one transaction, as the write path's and a registration's
        first = _last_result(conn.execute(privacy_generation.BUMP))  # makes the row, if a flush took it
        seen = _last_result(conn.execute(privacy_generation.SHARED_AND_READ))
        moved = _last_result(conn.execute(privacy_generation.BUMP))

    assert first == seen and seen is not None and moved is not None and moved > seen
    assert privacy_generation.read_generation() == moved
    assert "permission denied" in refusal(service_role, "DELETE FROM events_privacygeneration")


def test_it_erases_a_data_key_but_cannot_delete_one(service_role):
    data_keys_for_writing({"cus_1"})

    deleted = refusal(service_role, "DELETE FROM events_customerdatakey WHERE customer = 'cus_1'")

    # A deleted row would destroy the customer's personal data and leave nothing to say so.
    assert "permission denied" in deleted
    assert CustomerDataKey.objects.filter(customer="cus_1").exists()
    # What erase_customer does, as this role: an UPDATE, which verify_events matches to its record.
    assert refusal(service_role, "UPDATE events_customerdatakey SET wrapped = NULL, erased_at = now()") == ""


def _last_result(cursor: psycopg.Cursor[Any]) -> Any:
    cursor.nextset()
    row = cursor.fetchone()
    return row[0] if row else None


def _unsealed_ids() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT event_id FROM events_pendingseal")
        return [row[0] for row in cursor.fetchall()]


def test_grant_service_role_refuses_a_superuser(transactional_db):
    with pytest.raises(Exception, match="superuser or the tables' owner"):
        call_command("grant_service_role", connection.settings_dict["USER"] or "postgres", verbosity=0)
    with pytest.raises(Exception, match="there is no role"):
        call_command("grant_service_role", "no_such_role_anywhere", verbosity=0)


def test_production_warns_of_a_superuser_or_owner_connection(service_role, tmp_path: Path):
    production = environment(tmp_path, AUDITSVC_ENV="production", SECRET_KEY="x" * 50, AUDIT_PUBLIC_KEYS=PUBLIC_KEY,
                             AUDITSVC_DATA_KEY=DATA_KEY)  # fmt: skip

    def warnings_as(url: str, **extra: str) -> str:
        run = subprocess.run([sys.executable, "manage.py", "check"], cwd=REPO_ROOT, capture_output=True, text=True,
                             env={**production, "DATABASE_URL": url, **extra}, timeout=60, check=False)  # fmt: skip
        assert run.returncode == 0, run.stderr
        return run.stderr

    as_superuser = warnings_as(database_url())
    assert "auditsvc.W020" in as_superuser and "a superuser" in as_superuser
    assert "auditsvc.W020" in warnings_as(database_url(), AUDITSVC_DATABASE_ROLE="owner")  # a superuser all the same
    assert "auditsvc.W020" not in warnings_as(service_role)

    # A role that holds the owner's rights (here: a member of the owner) is warned of unless it says it is the owner.
    owner = f"{connection.settings_dict['NAME']}_owner"
    with connection.cursor() as cursor:
        cursor.execute(f"DROP ROLE IF EXISTS {owner}")
        cursor.execute(f"CREATE ROLE {owner} LOGIN IN ROLE {connection.settings_dict['USER'] or 'postgres'}")
    try:
        owner_url = service_role.replace(service_role.split("//")[1].split("@")[0], owner)
        assert "the owner of the events tables" in warnings_as(owner_url)
        assert "auditsvc.W020" not in warnings_as(owner_url, AUDITSVC_DATABASE_ROLE="owner")
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP ROLE {owner}")


def test_a_production_gunicorn_says_so_at_start(service_role, tmp_path: Path):
    production: dict[str, str] = environment(tmp_path, AUDITSVC_ENV="production", SECRET_KEY="x" * 50,
                                             AUDIT_PUBLIC_KEYS=PUBLIC_KEY, AUDITSVC_DATA_KEY=DATA_KEY,
                                             ALLOWED_HOSTS="127.0.0.1")  # fmt: skip
    for url, warned in ((database_url(), True), (service_role, False)):
        log = tmp_path / "gunicorn.log"
        with log.open("wb") as stderr, gunicorn(1, stderr, **{**production, "DATABASE_URL": url}):
            pass
        assert ("auditsvc.W020" in log.read_text()) is warned, log.read_text()[-2000:]


def test_what_the_role_may_do_to_the_seal_queue_cannot_keep_an_event_from_its_seal_unseen(service_role, api):
    """The seal queue is the one events table the role may delete from: an event whose queue row
    it deleted, or deleted and added again re-dated, is never sealed, and both are named."""
    api.post_json("/api/v1/events", {"type": "user.login", "actor": "u1"})
    deleted = api.post_json("/api/v1/events", {"type": "user.login", "actor": "u2"}).json()["id"]
    redated = api.post_json("/api/v1/events", {"type": "user.login", "actor": "u3"}).json()["id"]
    queue = "events_pendingseal"
    redating = "UPDATE events_pendingseal SET received_at = received_at + interval '1 day'"
    assert "permission denied" in refusal(service_role, redating)
    assert refusal(service_role, f"DELETE FROM {queue} WHERE event_id IN ('{deleted}', '{redated}')") == ""  # noqa: S608
    assert refusal(service_role, f"INSERT INTO {queue} VALUES ('{redated}', '2999-01-01')") == ""  # noqa: S608
    assert refusal(service_role, f"INSERT INTO {queue} VALUES ('{uuid.uuid4()}', 'infinity')") == ""  # noqa: S608

    seal_events(lag_seconds=0)
    findings = sorted((f.kind, f.event_id) for f in verify_integrity().findings)
    health = subprocess.run([sys.executable, "manage.py", "healthcheck", "--sealer"], cwd=REPO_ROOT,
                            env={**os.environ, "DATABASE_URL": service_role}, capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    ready = Client().get("/readyz")

    assert findings == sorted([("event_inserted", deleted), ("event_held_back", redated)])
    assert health.returncode == 1 and "queued for a seal at a time still to come" in health.stdout + health.stderr
    assert redated in health.stdout + health.stderr and "Traceback" not in health.stderr
    assert ready.status_code == 200 and ready.json()["database"] == "ok"
    assert "auditsvc_seal_lag_seconds 0.0" in Client().get("/metrics").content.decode()

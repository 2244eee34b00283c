"""Fault suite: imports of old events keep committing into a month while apply_retention retires
it. Every event an import acknowledged is afterwards either in the table or in a verified
archive; none is reported stored and then dropped (issue 24, item 1)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from django.db import connection

from events.integrity.sealing import seal_events
from events.integrity.verification import verify_integrity
from events.lifecycle.retention import RetentionRefused, apply_retention
from events.models import Event, PendingSeal
from tests.database import drop_past_partitions
from tests.events.ingest.test_import_export import write_lines
from tests.events.lifecycle.test_retention import JANUARY
from tests.paths import REPO_ROOT
from tests.processes import database_url

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

ROUNDS, PER_ROUND = 40, 25


def import_rounds(tmp_path: Path, acknowledged: set[str], refused: list[int], stop: threading.Event) -> None:
    """Import round after round of distinct January events; note the keys each run stored."""
    try:
        for round_ in range(ROUNDS):
            if stop.is_set():
                break
            keys = [f"old-{round_}-{n}" for n in range(PER_ROUND)]
            lines = [
                json.dumps({"type": "user.login", "source": "billing", "actor": key, "idempotency_key": key,
                            "received_at": f"{JANUARY}-{10 + n % 18:02d}T08:00:{n % 60:02d}Z"})
                for n, key in enumerate(keys)
            ]  # fmt: skip
            rejects = tmp_path / f"rejects-{round_}.ndjson"
            path = write_lines(tmp_path / f"round-{round_}.ndjson", lines)
            # A process of its own, as an operator's import runs: it commits for real, beside retention.
            run = subprocess.run(
                [sys.executable, "manage.py", "import_events", str(path), "--rejects", str(rejects)],
                cwd=REPO_ROOT, env={**os.environ, "DATABASE_URL": database_url()}, capture_output=True,
                timeout=120, check=False,
            )  # fmt: skip
            assert run.returncode in (0, 1), run.stderr.decode()[-2000:]
            if "Import stopped" in run.stderr.decode():
                # Stopped, not refused (its transaction lost a deadlock with retention's drop, say):
                # it acknowledged only what it stored before, which is what the table holds now.
                refused.append(0)
                acknowledged.update(_stored_keys_of(keys))
                continue
            if rejects.exists():
                for line in rejects.read_text().splitlines():
                    assert json.loads(line)["errors"][0]["code"] == "retention_expired", line
            refused_count = len(rejects.read_text().splitlines()) if rejects.exists() else 0
            refused.append(refused_count)
            if refused_count == 0:
                acknowledged.update(keys)
            elif refused_count < PER_ROUND:  # part of a run: name them from the file's records
                acknowledged.update(_stored_keys_of(keys))
    finally:
        connection.close()


def _stored_keys_of(keys: list[str]) -> set[str]:
    stored = Event.objects.filter(idempotency_key__in=keys).values_list("idempotency_key", flat=True)
    return {key for key in stored if key is not None}


@pytest.fixture(autouse=True)
def _no_old_partitions(transactional_db):
    drop_past_partitions()


def test_every_acknowledged_import_is_in_the_table_or_a_verified_archive(api, tmp_path, settings):
    settings.AUDITSVC_SEAL_LAG_SECONDS = 0
    settings.AUDITSVC_RETENTION_DAYS = 400
    archive_dir = tmp_path / "archives"
    acknowledged: set[str] = set()
    refused: list[int] = []
    stop = threading.Event()
    importer = threading.Thread(target=import_rounds, args=(tmp_path, acknowledged, refused, stop))
    importer.start()
    retired = False
    try:
        deadline = time.monotonic() + 120
        while not acknowledged and time.monotonic() < deadline:
            time.sleep(0.1)  # retention starts once a round is in the month: else it may close it first
        while not retired and time.monotonic() < deadline:
            time.sleep(0.3)  # let some rounds commit into the month first
            seal_events()
            try:
                retired = bool(apply_retention(archive_dir=archive_dir).retired)
            except RetentionRefused:
                continue  # events of the month still unsealed: seal, and try again
    finally:
        importer.join(timeout=300)
        stop.set()
    assert retired, "apply_retention never retired the month"
    assert acknowledged, "no import was acknowledged before the month closed"
    assert any(refused), "no import ran after the month closed: the race was not exercised"

    seal_events()
    archived = {
        orjson.loads(line)["idempotency_key"]
        for line in gzip.decompress((archive_dir / "events-2024-01.ndjson.gz").read_bytes()).splitlines()
    }
    in_table = set(Event.objects.filter(idempotency_key__in=acknowledged).values_list("idempotency_key", flat=True))
    assert acknowledged <= archived | in_table, sorted(acknowledged - archived - in_table)[:5]
    assert not in_table, "a January event outlived its month's partition"
    assert not PendingSeal.objects.exists()
    report = verify_integrity(archive_dir=archive_dir)
    assert report.ok, report.findings[:5]
    assert report.archived_rechecked == len(archived)

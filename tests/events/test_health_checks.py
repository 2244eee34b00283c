"""manage.py healthcheck: the container health checks of the sealer, the drainer, the daily jobs."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from io import StringIO

import time_machine
from django.core.management import call_command

from events.health_checks import partition_problem
from events.ingest import stream
from events.ingest.validation import parse_event
from events.ingest.write import ingest_events
from events.integrity.sealing import seal_events
from tests.factories import SourceFactory


def healthcheck(*args: str) -> tuple[int, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("healthcheck", *args, stdout=out, stderr=err)
    except SystemExit as exit:
        return int(exit.code or 0), err.getvalue()
    return 0, out.getvalue()


def test_healthy_when_the_work_is_done(db):
    assert healthcheck("--sealer", "--partitions") == (0, "healthy\n")


def test_the_sealer_is_unhealthy_while_an_event_waits_too_long_for_its_seal(db, settings):
    settings.AUDITSVC_SEAL_LAG_SECONDS = 0
    with time_machine.travel(datetime.now(UTC) - timedelta(minutes=10)):
        ingest_events(source=SourceFactory.create(slug="billing"), items=[parse_event({"type": "a.b"})])

    code, said = healthcheck("--sealer")
    assert code == 1 and re.search(r"waits for 60\d s", said) and "is the sealer running?" in said
    assert healthcheck("--sealer", "--max-seal-lag", "900")[0] == 0
    seal_events()
    assert healthcheck("--sealer")[0] == 0


def test_the_daily_jobs_are_unhealthy_without_next_months_partition(db):
    assert partition_problem() is None  # migrations make the months ahead
    problem = partition_problem(now=datetime(2031, 5, 3, tzinfo=UTC))
    assert problem is not None and "2031-06" in problem and "manage.py partitions" in problem


def test_the_drainer_is_unhealthy_while_an_entry_waits_too_long(api, stream_mode):
    assert healthcheck("--drainer") == (0, "healthy\n")
    stream.accept_event(source=api.source, item=parse_event({"type": "a.b"}))

    assert healthcheck("--drainer")[0] == 0  # waiting, but not long
    code, said = healthcheck("--drainer", "--max-stream-lag", "-1")
    assert code == 1 and "1 stream entries wait" in said and "drainer" in said

"""erase_customer follows Django's convention for destructive commands (issue 24, item 9)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from customers.models import Customer
from events.models import Event
from tests.paths import REPO_ROOT
from tests.processes import database_url

pytestmark = pytest.mark.django_db(transaction=True)  # the command runs in a process of its own


def erase(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "erase_customer", "cus_1", *args],
        cwd=REPO_ROOT, env={"PATH": "/usr/bin:/bin", "DATABASE_URL": database_url()},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_it_stops_with_what_to_pass_when_it_cannot_ask_and_erases_with_no_input(api):
    assert api.post_json("/api/v1/events", {"type": "user.login", "customer": "cus_1"}).status_code == 201

    refused = erase()

    assert refused.returncode == 1
    assert "Pass --no-input to erase cus_1" in refused.stderr and "Traceback" not in refused.stderr
    assert not Event.objects.filter(type__name="auditsvc.customer.erased").exists()

    done = erase("--no-input")

    assert done.returncode == 0, done.stderr
    assert "Erased cus_1" in done.stdout
    assert Event.objects.filter(type__name="auditsvc.customer.erased").count() == 1
    assert Customer.objects.filter(external_id="cus_1").exists()

"""The sealer loop (seal_events --loop, and the development thread in each worker) goes on
after an error, logging it, and stops when asked."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from django.test import override_settings

from events.integrity import autoseal, sealing
from events.integrity.autoseal import seal_periodically, start_auto_sealing
from events.models import PendingSeal, Seal
from tests.paths import REPO_ROOT
from tests.processes import database_url

pytestmark = pytest.mark.django_db(transaction=True)  # the loop runs in its own thread and connection


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@override_settings(AUDITSVC_SEAL_LAG_SECONDS=0)
def test_it_logs_an_error_and_goes_on_sealing(api, monkeypatch, caplog):
    real, calls = sealing.seal_events, []

    def fails_once():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        return real()

    monkeypatch.setattr(autoseal, "seal_events", fails_once)
    assert api.post_json("/api/v1/events", {"type": "a.b"}).status_code == 201
    stop = threading.Event()
    thread = threading.Thread(target=seal_periodically, kwargs={"interval": 0.05, "stop": stop})

    with caplog.at_level(logging.ERROR, logger="events.integrity.autoseal"):
        thread.start()
        sealed = wait_for(Seal.objects.exists)
        stop.set()
        thread.join(timeout=5)

    assert sealed and not thread.is_alive()
    assert not PendingSeal.objects.exists()
    assert "sealing failed" in caplog.text and "the database went away" in caplog.text


@override_settings(AUDITSVC_SEAL_LAG_SECONDS=0, AUDITSVC_AUTO_SEAL_SECONDS=1)
def test_the_development_thread_seals_in_the_background(api):
    assert api.post_json("/api/v1/events", {"type": "a.b"}).status_code == 201

    stop = threading.Event()
    thread = start_auto_sealing(stop)
    sealed = wait_for(Seal.objects.exists)
    stop.set()

    assert thread is not None and thread.daemon
    assert sealed
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_auto_sealing_is_off_by_default():
    assert start_auto_sealing() is None


def test_the_sealer_process_seals_and_stops_on_sigterm(api):
    assert api.post_json("/api/v1/events", {"type": "a.b"}).status_code == 201
    env = {**os.environ, "DATABASE_URL": database_url(), "AUDITSVC_SEAL_LAG_SECONDS": "0"}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "seal_events", "--loop", "--interval", "0.2"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    sealed = wait_for(Seal.objects.exists, timeout=20)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=20)

    assert sealed and process.returncode == 0, err
    assert "Sealing every 0.2 s" in out and "sealed 1 events in seal 1" in out and "Sealer stopped." in out

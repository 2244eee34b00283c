"""A long-running command's stop request survives a storm of signals: the handler must not
take a lock that the loop it interrupted may hold (threading.Event's does, and hangs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.paths import REPO_ROOT

LOOP = """
import signal, sys, time
sys.path.insert(0, {root!r})
from events.management.stopping import stop_requested_by_signal
stop = stop_requested_by_signal()
print("ready", flush=True)
rounds, deadline = 0, time.monotonic() + 2
while time.monotonic() < deadline:
    stop.wait(0.00001)  # the window where Event.wait holds its lock, entered again and again
    stop.clear()
    rounds += 1
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the storm outlives the loop
print("done", rounds, flush=True)
"""


def test_signals_arriving_while_the_loop_waits_never_hang_it():
    child = subprocess.Popen(
        [sys.executable, "-c", LOOP.format(root=str(REPO_ROOT))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    sent, give_up = 0, time.monotonic() + 15
    while child.poll() is None and time.monotonic() < give_up:
        os.kill(child.pid, signal.SIGTERM)
        sent += 1
        time.sleep(0.0005)
    if child.poll() is None:
        child.kill()
    out, err = child.communicate(timeout=10)

    assert child.returncode == 0 and out.startswith("done"), f"after {sent} signals: {err[-2000:]}"
    assert sent > 1000

"""Long-running commands (seal_events --loop, drain_events) stop on SIGTERM or Ctrl-C by
finishing what they hold, not mid-write."""

from __future__ import annotations

import signal
import threading
from types import FrameType


def stop_requested_by_signal() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for a loop to check between steps."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop

"""Long-running commands (seal_events --loop, drain_events) stop on SIGTERM or Ctrl-C by
finishing what they hold, not mid-write."""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

_POLL_SECONDS = 0.05


class SignalStop(threading.Event):
    """A stop request a signal handler can set safely.

    threading.Event.set takes the lock that the interrupted Event.wait may be holding in the
    same (main) thread, so a handler calling it can hang the loop for good (a sealer once did
    in CI); here the handler only sets a flag, and wait polls it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._requested = False

    def set(self) -> None:
        self._requested = True

    def clear(self) -> None:
        self._requested = False

    def is_set(self) -> bool:
        return self._requested

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._requested:
            remaining = _POLL_SECONDS if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(remaining, _POLL_SECONDS))
        return self._requested


def stop_requested_by_signal() -> SignalStop:
    """A stop request set by SIGTERM or SIGINT, for a loop to check between steps."""
    stop = SignalStop()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop

"""Sealing on a timer: the separate sealer process (`seal_events --loop`) and, in development,
a thread in each gunicorn worker (AUDITSVC_AUTO_SEAL_SECONDS > 0)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.conf import settings
from django.db import connection

from events.integrity.sealing import seal_events

logger = logging.getLogger(__name__)


def seal_periodically(
    *, interval: float, stop: threading.Event, on_seal: Callable[[str], object] = logger.info
) -> None:
    """Seal every interval seconds until stop is set. An error is logged and the loop goes on:
    a sealer that dies silently leaves events unsealed with nobody told."""
    while not stop.wait(interval):
        try:
            for seal in seal_events():
                signed = "signed" if seal.signature else "unsigned"
                on_seal(f"sealed {seal.event_count} events in seal {seal.sequence} ({signed})")
        except Exception:
            logger.exception("sealing failed; trying again in %s s", interval)
        finally:
            connection.close()  # a broken connection is not reused, a fresh one is made next time


def start_auto_sealing(stop: threading.Event | None = None) -> threading.Thread | None:
    """The development convenience: a daemon thread per worker (the advisory lock lets one
    sealer at a time through), until stop is set (never, in a worker)."""
    interval = settings.AUDITSVC_AUTO_SEAL_SECONDS
    if interval <= 0:
        return None
    thread = threading.Thread(
        target=seal_periodically,
        kwargs={"interval": interval, "stop": stop or threading.Event()},
        name="auto-seal",
        daemon=True,
    )
    thread.start()
    return thread

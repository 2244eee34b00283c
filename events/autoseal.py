"""In-process sealing for deployments without cron (AUDITSVC_AUTO_SEAL_SECONDS > 0)."""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import DatabaseError, connection

from events.sealing import seal_events

logger = logging.getLogger(__name__)


def start_auto_sealing() -> threading.Thread | None:
    interval = settings.AUDITSVC_AUTO_SEAL_SECONDS
    if interval <= 0:
        return None
    thread = threading.Thread(target=_run, args=(interval,), name="auto-seal", daemon=True)
    thread.start()
    return thread


def _run(interval: int) -> None:
    while True:
        time.sleep(interval)
        try:
            for seal in seal_events():
                logger.info("sealed %s events in seal %s", seal.event_count, seal.sequence)
        except DatabaseError:
            logger.exception("auto-seal failed; retrying in %s s", interval)
        finally:
            connection.close()

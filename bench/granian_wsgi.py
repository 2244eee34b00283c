"""auditsvc.wsgi for granian with gunicorn's worker_exit done by a multiprocessing finalizer: the
one exit path a granian worker runs (atexit does not: the worker ends in os._exit; a SIGTERM
handler set at import is replaced by granian's). An experiment of bench.granian_guarantees,
not a way to serve."""

from __future__ import annotations

from multiprocessing import util

from auditsvc.wsgi import application
from events.access_log import stop_access_log
from events.ingest import type_counts
from events.ingest.group_commit import stop_group_commit

__all__ = ["application"]


def _worker_exit() -> None:
    stop_group_commit()
    stop_access_log()
    type_counts.flush()  # its atexit flush, which a granian worker does not run either


util.Finalize(None, _worker_exit, exitpriority=100)

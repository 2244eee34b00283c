"""bench.trivial_wsgi with exit probes, for bench.granian_guarantees: which of the ways a
process can run code as it leaves (atexit, a multiprocessing finalizer, a SIGTERM handler set at
import) does a server's worker run on a graceful stop? Each leaves a file in EXIT_PROBE_DIR."""

from __future__ import annotations

import atexit
import os
import signal
from multiprocessing import util
from pathlib import Path
from types import FrameType

from bench.trivial_wsgi import application

__all__ = ["application"]

_DIRECTORY = Path(os.environ["EXIT_PROBE_DIR"])
_PID = os.getpid()


def _mark(way: str) -> None:
    (_DIRECTORY / f"{_PID}.{way}").touch()


def _on_term(signum: int, frame: FrameType | None) -> None:
    _mark("sigterm-handler")
    signal.signal(signal.SIGTERM, _previous)
    os.kill(os.getpid(), signal.SIGTERM)


_mark("imported")
atexit.register(_mark, "atexit")
util.Finalize(None, _mark, args=("mp-finalizer",), exitpriority=100)
_previous = signal.signal(signal.SIGTERM, _on_term)

"""Grouped appends: concurrent stream-mode accepts of one worker share one round trip to Redis.

Each request thread hands its prepared script call (keys, args) to the process's appender.
Whoever finds no round trip in flight leads: it sends everything waiting as one pipeline
(transaction=False) of EVALSHAs, so that Redis runs them back to back and fsyncs the AOF once
for all of them (with `appendfsync always` it replies only after that fsync). Meanwhile new
arrivals queue up; when its replies are in, the leader hands the lead on to the oldest of them,
which sends the next pipeline. Every caller gets its own entry's reply (or error) only, and
never before that reply arrived: the reply is the durability proof, as a single call's is.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Append:
    keys: list[Any]
    args: list[Any]
    woken: threading.Event = field(default_factory=threading.Event)
    leads: bool = False  # set (under the appender's lock) when this caller is to send the next pipeline
    sent: bool = False  # taken into a pipeline: it may be appended even if its caller gives up waiting
    reply: Any = None
    error: BaseException | None = None

    def answer(self, reply: Any) -> None:
        if isinstance(reply, BaseException):
            self.error = reply
        else:
            self.reply = reply
        self.woken.set()


class StreamAppender:
    """One per worker process and Redis client (events.ingest.stream makes it on first use, after
    gunicorn forks); it starts no thread: the callers take turns to lead."""

    def __init__(self, *, client: Any, script: Script, max_group: int, wait_seconds: float) -> None:
        self._client = client
        self._script = script
        self.max_group = max_group
        self.wait_seconds = wait_seconds
        self._lock = threading.Lock()
        self._waiting: deque[_Append] = deque()
        self._leading = False  # a pipeline is being sent, or a caller was told to send the next
        self.pipelines = 0  # sent so far, by one leader at a time (a measure for tests and benchmarks)

    def call(self, *, keys: list[Any], args: list[Any]) -> Any:
        """The script's reply for this caller's entry; raises what Redis raised for it (or for its
        whole pipeline), or TimeoutError when no reply came in wait_seconds."""
        entry = _Append(keys, args)
        with self._lock:
            self._waiting.append(entry)
            if not self._leading:
                self._leading = entry.leads = True
        if not entry.leads:
            self._wait(entry)
        if entry.leads:  # the first to come, or handed the lead by the last leader
            self._lead()
        if entry.error is not None:
            raise entry.error
        return entry.reply

    def queued(self) -> int:
        """Entries waiting for the next pipeline (not yet sent)."""
        with self._lock:
            return len(self._waiting)

    def _wait(self, entry: _Append) -> None:
        # A bounded wait, as group_commit's: a leader that hangs (or a bug) must not strand the
        # callers behind it; redis-py's own timeouts and retries end a healthy leader's wait first.
        if entry.woken.wait(self.wait_seconds):
            return
        with self._lock:
            if entry.woken.is_set():  # answered, or handed the lead, just now
                return
            if not entry.sent:  # never sent: withdrawn, so certainly not appended
                self._waiting.remove(entry)
                raise TimeoutError("the stream append was not sent in time")
        raise TimeoutError("the stream append was sent but not answered in time")  # it may yet be appended

    def _lead(self) -> None:
        with self._lock:
            group = [self._waiting.popleft() for _ in range(min(self.max_group, len(self._waiting)))]
            for entry in group:
                entry.sent = True
            self.pipelines += 1
        interrupted: BaseException | None = None
        try:
            replies = self._send(group)
        except Exception as exc:  # the pipeline's, not one entry's: every caller of it gets it
            replies = [exc] * len(group)
        except BaseException as exc:  # the leader interrupted: its callers are answered all the same
            interrupted = exc
            replies = [redis.ConnectionError(f"the stream append was interrupted: {exc!r}")] * len(group)
        finally:
            self._hand_on()
        for entry, reply in zip(group, replies, strict=True):
            entry.answer(reply)
        if interrupted is not None:
            raise interrupted

    def _hand_on(self) -> None:
        """The lead passes to the oldest waiting caller (whose entry is then first in the next
        pipeline), or lapses when no one waits."""
        with self._lock:
            if self._waiting:
                successor = self._waiting[0]
                successor.leads = True
                successor.woken.set()
            else:
                self._leading = False

    def _send(self, group: list[_Append]) -> list[Any]:
        """One pipeline of EVALSHAs: the replies in order, an entry's own error in its place.
        Not through Script.__call__ on the pipeline: that asks SCRIPT EXISTS first, a second round
        trip each time. A NOSCRIPT reply (the server lost its scripts: a restart, a failover, SCRIPT
        FLUSH) means that entry did not run: the script is loaded and those entries sent again."""
        replies = self._pipeline(group)
        missing = [n for n, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            self._script.sha = self._client.script_load(self._script.script)
            for n, reply in zip(missing, self._pipeline([group[n] for n in missing]), strict=True):
                replies[n] = reply
        return replies

    def _pipeline(self, group: list[_Append]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for entry in group:
            pipe.evalsha(self._script.sha, len(entry.keys), *entry.keys, *entry.args)
        return list(pipe.execute(raise_on_error=False))

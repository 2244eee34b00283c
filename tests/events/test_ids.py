"""UUIDv7 ids: sortable within a process, and always saying when they were made."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import time_machine

from events.ids import uuid7, uuid7_time


def test_ids_increase_within_a_millisecond():
    ids = [uuid7() for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == 1000


def test_after_the_clock_steps_back_far_the_ids_follow_the_clock():
    with time_machine.travel(datetime.now(UTC) + timedelta(hours=2), tick=True):
        ahead = uuid7()
    back = uuid7()

    made = uuid7_time(back)
    assert made is not None and abs(made - datetime.now(UTC)) < timedelta(seconds=1)
    assert back < ahead  # a step this large breaks monotonic order, by design

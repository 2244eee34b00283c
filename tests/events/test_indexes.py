"""The indexes of events_event: each one some read needs, none that another already provides."""

from __future__ import annotations

from django.db import connection

# Every read target's index (docs/BENCHMARKS.md, "The write cost of indexes").
EXPECTED = {
    "events_event_pkey", "event_occurred", "event_customer_occurred", "event_type_occurred", "event_actor_occurred",
    "event_source_occurred", "event_received", "event_received_brin", "event_description_fts", "event_payload_gin",
}  # fmt: skip


def test_events_event_has_exactly_the_indexes_its_reads_need(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'events_event'")
        indexes = {name for (name,) in cursor.fetchall()}

    assert indexes == EXPECTED  # no single-column foreign-key index: the composites lead with them


def test_a_customers_timeline_still_uses_an_index_without_the_foreign_key_one(db):
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN SELECT id FROM events_event WHERE customer_id = 1 ORDER BY occurred_at DESC, id DESC")
        plan = "\n".join(row[0] for row in cursor.fetchall())

    # Each partition's copy of event_customer_occurred (named after the partition), no scan.
    assert "customer_id_occurred_at_id_idx" in plan
    assert "Seq Scan" not in plan

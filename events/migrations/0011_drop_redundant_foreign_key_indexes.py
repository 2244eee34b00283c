"""Drop the single-column indexes Django adds to the three foreign keys of events_event.

Each is redundant: an index on (key, occurred_at, id) leads with the same column and serves
every lookup by it; together they cost ~1 % of each COPY and their share of storage
(docs/BENCHMARKS.md, "The write cost of indexes"). Only the indexes are dropped, concurrently:
Django's own AlterField would also drop and re-validate the foreign keys, scanning the table
under a lock that blocks ingest.
"""

import django.db.models.deletion
from django.db import migrations, models

INDEXES = {
    "events_event_customer_id_d5d99f9f": "customer_id",
    "events_event_source_id_8865a32a": "source_id",
    "events_event_type_id_04a81abf": "type_id",
}


class Migration(migrations.Migration):
    atomic = False  # DROP INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("customers", "0003_identity_external_id_index"),
        ("events", "0010_read_own_scope"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="event",
                    name="customer",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="events",
                        to="customers.customer",
                    ),
                ),
                migrations.AlterField(
                    model_name="event",
                    name="source",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="events",
                        to="events.source",
                    ),
                ),
                migrations.AlterField(
                    model_name="event",
                    name="type",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="events",
                        to="events.eventtype",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"',
                    reverse_sql=f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{name}" ON "events_event" ("{column}")',
                )
                for name, column in INDEXES.items()
            ],
        ),
    ]

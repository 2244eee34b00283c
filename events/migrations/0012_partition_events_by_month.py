"""events_event becomes a table partitioned by month of receipt, ranged on the UUIDv7 id.

History is not rewritten. An empty table is simply made again, partitioned. A filled one is
renamed events_event_legacy and attached whole as one partition, from MINVALUE to the end of
the current month (its indexes and foreign keys are attached, not rebuilt). Rows whose ids
lie beyond that (only an import of another system's random UUIDs could have stored such) are
moved, unchanged, into events_event_legacy_tail, open upward, so that the months in between
can still get partitions of their own. (0013 makes the partitions of the months ahead.)

The append-only triggers move to the parent, where the row trigger holds for every partition
present and future; each partition gets its own TRUNCATE trigger (a statement trigger on
the parent does not fire for a partition truncated by name). The escape hatch that let a
session opt out of the TRUNCATE refusal is gone.

Not reversible: going back would mean copying every event into a plain table.
"""

from datetime import UTC, datetime

from django.db import migrations

from events.lifecycle import partitions

REFUSE_TRUNCATE = """
CREATE OR REPLACE FUNCTION auditsvc_reject_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: TRUNCATE is not allowed', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Retention drops whole partitions: manage.py apply_retention.';
END;
$$;
"""


def partition_events(apps, schema_editor):
    execute = schema_editor.execute
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = 'events_event'::regclass")
        if cursor.fetchone()[0] == "p":
            return  # already partitioned
        cursor.execute("LOCK TABLE events_event IN ACCESS EXCLUSIVE MODE")
        cursor.execute("SELECT EXISTS (SELECT 1 FROM events_event)")
        filled = cursor.fetchone()[0]
    event = apps.get_model("events", "Event")
    legacy_upper = partitions.Month.of(datetime.now(UTC)).upper
    if filled:
        execute("ALTER TABLE events_event RENAME TO events_event_legacy")
        execute("ALTER TABLE events_event_legacy RENAME CONSTRAINT events_event_pkey TO events_event_legacy_pkey")
        for index in event._meta.indexes:
            execute(f'ALTER INDEX "{index.name}" RENAME TO "{index.name}_legacy"')
        execute("DROP TRIGGER events_event_append_only ON events_event_legacy")
        execute("DROP TRIGGER events_event_no_truncate ON events_event_legacy")
    else:
        execute("DROP TABLE events_event")
    sql, params = schema_editor.table_sql(event)  # the foreign keys go to deferred_sql
    execute(sql + " PARTITION BY RANGE (id)", params or None)
    if filled:
        _attach_legacy(schema_editor, legacy_upper)
    for index in event._meta.indexes:  # matching indexes of the legacy partition are attached
        schema_editor.add_index(event, index)
    execute(
        "CREATE TRIGGER events_event_append_only BEFORE UPDATE OR DELETE ON events_event"
        " FOR EACH ROW EXECUTE FUNCTION events_event_reject_change()"
    )
    execute(
        "CREATE TRIGGER events_event_no_truncate BEFORE TRUNCATE ON events_event"
        " FOR EACH STATEMENT EXECUTE FUNCTION auditsvc_reject_truncate()"
    )


def _attach_legacy(schema_editor, upper):
    execute = schema_editor.execute
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT id FROM events_event_legacy WHERE id >= %s ORDER BY id LIMIT 1", [upper])
        beyond = (cursor.fetchone() or [None])[0]
    if beyond is not None:
        tail_lower = partitions.Month.of_id(beyond).lower
        execute(f"CREATE TABLE events_event_legacy_tail PARTITION OF events_event FOR VALUES FROM ('{tail_lower}') TO (MAXVALUE)")
        execute("INSERT INTO events_event_legacy_tail SELECT * FROM events_event_legacy WHERE id >= %s", [upper])
        execute("DELETE FROM events_event_legacy WHERE id >= %s", [upper])
        execute(partitions.no_truncate_trigger_sql("events_event_legacy_tail"))
    execute(f"ALTER TABLE events_event ATTACH PARTITION events_event_legacy FOR VALUES FROM (MINVALUE) TO ('{upper}')")
    execute(partitions.no_truncate_trigger_sql("events_event_legacy"))


class Migration(migrations.Migration):
    dependencies = [("events", "0011_drop_redundant_foreign_key_indexes")]

    operations = [
        migrations.RunPython(partition_events),
        migrations.RunSQL(REFUSE_TRUNCATE),
    ]

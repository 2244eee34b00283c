"""The one way a month's partition is made, as a function the tables' owner defines.

CREATE TABLE ... PARTITION OF needs the owner of events_event. The service runs as a role
without DDL rights (docs/operations.md, "Database roles"), yet the write path makes the
partition of an imported event's month on demand: it calls this SECURITY DEFINER function,
which can make exactly a month's partition (with its TRUNCATE guard) and nothing else, and
refuses a month retention removed.
"""

from django.db import migrations

from events.lifecycle import partitions

CREATE = r"""
CREATE FUNCTION auditsvc_create_month_partition(year integer, month integer) RETURNS text
-- search_path: that of the migration, fixed, so no caller can point names elsewhere.
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    first_instant timestamptz;
    month_lower uuid;
    month_upper uuid;
    name text;
BEGIN
    IF year NOT BETWEEN 1970 AND 9999 OR month NOT BETWEEN 1 AND 12 THEN
        RAISE EXCEPTION 'no partition for month %-%', year, month USING ERRCODE = '22023';
    END IF;
    first_instant := make_timestamptz(year, month, 1, 0, 0, 0, 'UTC');
    -- The UUIDv7 floor of an instant: its Unix milliseconds in the first 48 bits, zeros after
    -- (events.lifecycle.partitions.uuid7_floor).
    month_lower := (lpad(to_hex((extract(epoch FROM first_instant) * 1000)::bigint), 12, '0')
                 || repeat('0', 20))::uuid;
    month_upper := (lpad(to_hex((extract(epoch FROM first_instant + interval '1 month') * 1000)::bigint), 12, '0')
                 || repeat('0', 20))::uuid;
    name := format('events_event_y%sm%s', lpad(year::text, 4, '0'), lpad(month::text, 2, '0'));
    IF EXISTS (SELECT 1 FROM events_retiredpartition r
               WHERE (r.lower_id IS NULL OR r.lower_id < month_upper)
                 AND (r.upper_id IS NULL OR r.upper_id > month_lower)) THEN
        RAISE EXCEPTION 'month %-% was removed by retention', year, month USING ERRCODE = '22023';
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF events_event FOR VALUES FROM (%L) TO (%L)',
                   name, month_lower, month_upper);
    -- TRUNCATE of a partition does not fire the parent's statement trigger: each has its own.
    EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT'
                   ' EXECUTE FUNCTION auditsvc_reject_truncate()', name || '_no_truncate', name);
    RETURN name;
END $$;
REVOKE ALL ON FUNCTION auditsvc_create_month_partition(integer, integer) FROM PUBLIC;
"""

DROP = "DROP FUNCTION auditsvc_create_month_partition(integer, integer);"


def partitions_ahead(apps, schema_editor):
    partitions.ensure_ahead(3)


class Migration(migrations.Migration):
    dependencies = [("events", "0018_lost_events")]

    operations = [
        migrations.RunSQL(CREATE, DROP),
        migrations.RunPython(partitions_ahead, migrations.RunPython.noop),
    ]

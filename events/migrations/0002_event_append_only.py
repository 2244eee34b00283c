"""Events are append-only: the database itself rejects UPDATE and DELETE on events_event.

A trigger rather than a REVOKE: it holds for every role short of one that disables triggers,
and its error names the invariant. (TRUNCATE is covered with the tamper-evidence work.)
"""

from django.db import migrations

INSTALL = """
CREATE FUNCTION events_event_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events_event is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Stored audit events are never changed or removed; retention drops whole partitions.';
END;
$$;
CREATE TRIGGER events_event_append_only
    BEFORE UPDATE OR DELETE ON events_event
    FOR EACH ROW EXECUTE FUNCTION events_event_reject_change();
"""

REMOVE = """
DROP TRIGGER IF EXISTS events_event_append_only ON events_event;
DROP FUNCTION IF EXISTS events_event_reject_change();
"""


class Migration(migrations.Migration):
    dependencies = [("events", "0001_initial")]

    operations = [migrations.RunSQL(INSTALL, REMOVE)]

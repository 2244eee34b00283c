"""Append-only, completed: TRUNCATE of events is refused too, and seals are append-only.

TRUNCATE is allowed only in a session that first says `SET auditsvc.allow_truncate = on`:
as deliberate as disabling the trigger, and what the test suite's teardown did. (0012 removed
that opt-out: no setting lets a session past the refusal any more.)
"""

from django.db import migrations

INSTALL = """
CREATE FUNCTION auditsvc_reject_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('auditsvc.allow_truncate', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '% is append-only: TRUNCATE is not allowed', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER events_event_no_truncate BEFORE TRUNCATE ON events_event
    FOR EACH STATEMENT EXECUTE FUNCTION auditsvc_reject_truncate();

CREATE FUNCTION events_seal_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER events_seal_append_only BEFORE UPDATE OR DELETE ON events_seal
    FOR EACH ROW EXECUTE FUNCTION events_seal_reject_change();
CREATE TRIGGER events_sealentry_append_only BEFORE UPDATE OR DELETE ON events_sealentry
    FOR EACH ROW EXECUTE FUNCTION events_seal_reject_change();
CREATE TRIGGER events_seal_no_truncate BEFORE TRUNCATE ON events_seal
    FOR EACH STATEMENT EXECUTE FUNCTION auditsvc_reject_truncate();
CREATE TRIGGER events_sealentry_no_truncate BEFORE TRUNCATE ON events_sealentry
    FOR EACH STATEMENT EXECUTE FUNCTION auditsvc_reject_truncate();
"""

REMOVE = """
DROP TRIGGER IF EXISTS events_sealentry_no_truncate ON events_sealentry;
DROP TRIGGER IF EXISTS events_seal_no_truncate ON events_seal;
DROP TRIGGER IF EXISTS events_sealentry_append_only ON events_sealentry;
DROP TRIGGER IF EXISTS events_seal_append_only ON events_seal;
DROP FUNCTION IF EXISTS events_seal_reject_change();
DROP TRIGGER IF EXISTS events_event_no_truncate ON events_event;
DROP FUNCTION IF EXISTS auditsvc_reject_truncate();
"""


class Migration(migrations.Migration):
    dependencies = [("events", "0004_seals")]

    operations = [migrations.RunSQL(INSTALL, REMOVE)]

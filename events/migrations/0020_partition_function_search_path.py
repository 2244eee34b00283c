"""The partition function's search_path names pg_temp last.

`SET search_path FROM CURRENT` (0019) left pg_temp implicit, and PostgreSQL then searches the
caller's temporary schema first for tables: the service role could shadow
events_retiredpartition with a temporary table of its own and have the function, running as
the owner, re-create a month that retention removed. Pinning the schema and pg_temp last is
PostgreSQL's advice for SECURITY DEFINER functions ("Writing SECURITY DEFINER Functions Safely").
"""

from django.db import migrations

PIN = r"""
DO $$ BEGIN
    EXECUTE format('ALTER FUNCTION auditsvc_create_month_partition(integer, integer) SET search_path = %I, pg_temp',
                   current_schema());
END $$;
"""
UNPIN = "ALTER FUNCTION auditsvc_create_month_partition(integer, integer) SET search_path FROM CURRENT;"


class Migration(migrations.Migration):
    dependencies = [("events", "0019_partition_function")]

    operations = [migrations.RunSQL(PIN, UNPIN)]

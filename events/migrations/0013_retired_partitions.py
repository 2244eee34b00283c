"""Partitions removed by retention: kept for good, so the table is append-only like the seals.

The partitions of the months ahead, once made here, are made by 0019: they are made through
the function it defines, which this table's rows constrain (a retired month gets none)."""

from django.db import migrations, models


def partitions_ahead(apps, schema_editor):
    pass  # moved to 0019, which defines the function that makes them


class Migration(migrations.Migration):

    dependencies = [
        ('events', '0012_partition_events_by_month'),
    ]

    operations = [
        migrations.CreateModel(
            name='RetiredPartition',
            fields=[
                ('table', models.CharField(max_length=63, primary_key=True, serialize=False)),
                ('lower_id', models.UUIDField(null=True)),
                ('upper_id', models.UUIDField(null=True)),
                ('retired_at', models.DateTimeField()),
                ('event_count', models.BigIntegerField()),
                ('first_event_id', models.UUIDField(null=True)),
                ('last_event_id', models.UUIDField(null=True)),
                ('archive_name', models.CharField(blank=True, default='', max_length=200)),
                ('archive_sha256', models.CharField(blank=True, default='', max_length=64)),
                ('manifest', models.JSONField(default=dict)),
            ],
        ),
        migrations.RunSQL(
            "CREATE TRIGGER events_retiredpartition_append_only BEFORE UPDATE OR DELETE ON events_retiredpartition"
            " FOR EACH ROW EXECUTE FUNCTION events_seal_reject_change();"
            "CREATE TRIGGER events_retiredpartition_no_truncate BEFORE TRUNCATE ON events_retiredpartition"
            " FOR EACH STATEMENT EXECUTE FUNCTION auditsvc_reject_truncate();",
            "DROP TRIGGER events_retiredpartition_append_only ON events_retiredpartition;"
            "DROP TRIGGER events_retiredpartition_no_truncate ON events_retiredpartition;",
        ),
        migrations.RunPython(partitions_ahead, migrations.RunPython.noop),
    ]

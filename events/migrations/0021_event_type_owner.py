"""Event types get an owner: the source whose schema keys may register their schemas (issue 25).
Existing types go to the source of their first stored event; a type with none stays unowned until
a source sends it or registers a schema for it."""

import django.db.models.deletion
from django.db import migrations, models

FIRST_SENDERS = """
UPDATE events_eventtype AS t SET owner_id = first.source_id
FROM (SELECT DISTINCT ON (type_id) type_id, source_id FROM events_event ORDER BY type_id, id) AS first
WHERE first.type_id = t.id AND t.owner_id IS NULL
"""


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0020_partition_function_search_path"),
    ]

    operations = [
        migrations.AddField(
            model_name="eventtype",
            name="owner",
            field=models.ForeignKey(
                blank=True,
                help_text="The source whose schema-scope keys may register this type's schemas.",
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="owned_types",
                to="events.source",
            ),
        ),
        migrations.RunSQL(FIRST_SENDERS, migrations.RunSQL.noop),
    ]

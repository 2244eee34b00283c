"""The privacy generation (events.privacy_generation): one row, moved by every change of what is
protected, read under a shared lock by every write. Its values come from a sequence so that a rolled-back
bump's value is never used again."""

from django.db import migrations, models

SEQUENCE = """
CREATE SEQUENCE events_privacygeneration_seq OWNED BY events_privacygeneration.generation;
INSERT INTO events_privacygeneration (id, generation) VALUES (1, nextval('events_privacygeneration_seq'));
"""
NO_SEQUENCE = "DELETE FROM events_privacygeneration; DROP SEQUENCE events_privacygeneration_seq;"


class Migration(migrations.Migration):
    dependencies = [("events", "0021_event_type_owner")]

    operations = [
        migrations.CreateModel(
            name="PrivacyGeneration",
            fields=[
                ("id", models.PositiveSmallIntegerField(default=1, primary_key=True, serialize=False)),
                ("generation", models.BigIntegerField()),
            ],
            options={
                "constraints": [models.CheckConstraint(condition=models.Q(id=1), name="privacy_generation_one_row")],
            },
        ),
        migrations.RunSQL(SEQUENCE, NO_SEQUENCE),
    ]

"""The Auditors group: view-only access to events, customers, types, sources and seals."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEW_PERMISSIONS = [
    ("events", "view_event"),
    ("events", "view_eventtype"),
    ("events", "view_source"),
    ("events", "view_seal"),
    ("customers", "view_customer"),
    ("customers", "view_customeridentity"),
]


def create_auditors(apps, schema_editor):
    # Permissions are normally created after all migrations; make sure they exist now.
    for app_label in ("events", "customers"):
        app_config = apps.get_app_config(app_label)
        # The migration-state stub lacks models_module, which create_permissions checks; the real
        # app config (the tests call this with the global registry) keeps its own afterwards.
        kept = getattr(app_config, "models_module", None)
        app_config.models_module = kept or True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = kept
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    auditors, _ = Group.objects.get_or_create(name="Auditors")
    for app_label, codename in VIEW_PERMISSIONS:
        auditors.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def remove_auditors(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name="Auditors").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0006_admin_support"),
        ("customers", "0002_email_index"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_auditors, remove_auditors)]

from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"
    verbose_name = "Audit events"

    def ready(self) -> None:
        from events import checks  # noqa: F401, PLC0415 - registers the system checks

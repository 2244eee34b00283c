import os

from django.core.wsgi import get_wsgi_application

from auditsvc.embedded_db import start_embedded_database_if_configured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "auditsvc.settings")
start_embedded_database_if_configured()
django_application = get_wsgi_application()

from events.api.accept import in_front_of  # noqa: E402 - Django is set up by get_wsgi_application

# POST /api/v1/events by services is answered in front of Django (events.api.accept); all else by it.
application = in_front_of(django_application)

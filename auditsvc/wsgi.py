import os

from django.core.wsgi import get_wsgi_application

from auditsvc.embedded_db import start_embedded_database_if_configured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "auditsvc.settings")
start_embedded_database_if_configured()
application = get_wsgi_application()

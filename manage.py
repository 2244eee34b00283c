#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    from auditsvc.deployment import production_problem

    if problem := production_problem():
        sys.exit(problem)  # one message, no traceback: every missing setting is named
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "auditsvc.settings")
    from auditsvc.embedded_db import start_embedded_database_if_configured

    start_embedded_database_if_configured()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)

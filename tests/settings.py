"""The test run's settings: auditsvc.settings, without the checkout's development signing key.

Whether var/dev-signing-key exists (`make run` makes it) must not change what the tests see:
a test that wants a key sets one. Set in the environment before the settings are read, so that
the processes the tests start (manage.py, gunicorn) inherit it too.
"""

import os

os.environ["AUDITSVC_USE_DEV_SIGNING_KEY"] = "false"

from auditsvc.settings import *  # noqa: F403 - every setting, as the environment makes it

"""Schemathesis against the service's own OpenAPI schema, with every check it has (server
errors, response and status-code conformance, schema-valid requests accepted, schema-violating
ones refused, ...) over its examples, coverage, fuzzing and stateful phases: the schema and the
service stay in step. The few body rules OpenAPI 3.0 cannot state are in schemathesis_hooks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from events.keys import create_api_key
from events.models import SCOPES
from tests.factories import SourceFactory
from tests.paths import REPO_ROOT
from tests.processes import gunicorn

pytestmark = pytest.mark.django_db(transaction=True)

SEED = 1
EXAMPLES = 60  # per operation and phase: ~2,000 requests, about a minute


def test_the_service_keeps_every_promise_of_its_schema(tmp_path):
    # Every scope: no operation is left at its 403 (schema registration included).
    key = create_api_key(source=SourceFactory.create(slug="fuzz"), scopes=list(SCOPES)).plaintext
    st = Path(sys.executable).parent / "st"
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.security.schemathesis_hooks", "PYTHONPATH": str(REPO_ROOT)}
    # The service as deployed (auditsvc.wsgi under gunicorn): its POSTs take the accept path.
    with gunicorn() as url:
        result = subprocess.run(
            [str(st), "run", f"{url}/api/schema/?format=json", "-H", f"Authorization: Bearer {key}",
             "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful", "--seed", str(SEED),
             "-n", str(EXAMPLES), "--request-timeout", "20", "--no-color"],
            capture_output=True, text=True, check=False, timeout=900, cwd=tmp_path, env=env,
        )  # fmt: skip

    assert result.returncode == 0, result.stdout[-8000:]
    assert "Tested: 19" in result.stdout
    generated = int(result.stdout.split(" generated")[0].rsplit(maxsplit=1)[-1])
    assert generated > 1000, result.stdout[-2000:]  # really exercised, not skipped

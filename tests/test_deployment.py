"""AUDITSVC_ENV=production: every entry point refuses to start without its settings, naming
each missing one; development keeps working with nothing set, and importing settings never
starts a database server."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.exceptions import ImproperlyConfigured

from auditsvc.deployment import missing_production_settings, production_problem
from events.integrity import signing
from tests.paths import REPO_ROOT

# What the process would otherwise inherit from the test run (CI sets DATABASE_URL).
_OURS = ("DATABASE_URL", "SECRET_KEY", "AUDIT_SIGNING_KEY", "AUDIT_PUBLIC_KEYS", "AUDITSVC_API_KEY_HASH_SECRET")
DATA_KEY = "A" * 43 + "="  # 32 bytes in base64
PUBLIC_KEY = signing.public_key_bytes(Ed25519PrivateKey.generate().public_key()).hex()


def environment(tmp_path: Path, **values: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in _OURS and not k.endswith("_FILE")}
    return {**base, "AUDITSVC_VAR_DIR": str(tmp_path / "var"), **values}


def run(command: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def test_it_names_every_missing_production_setting():
    assert missing_production_settings({"AUDITSVC_ENV": "production"}) == [
        "DATABASE_URL", "SECRET_KEY", "AUDIT_SIGNING_KEY (or, for a process that only verifies, AUDIT_PUBLIC_KEYS)",
        "AUDITSVC_DATA_KEY",
    ]  # fmt: skip
    configured = {"DATABASE_URL": "postgres://x/y", "SECRET_KEY_FILE": "/run/s", "AUDIT_PUBLIC_KEYS": PUBLIC_KEY,
                  "AUDITSVC_DATA_KEY_FILE": "/run/d"}  # fmt: skip
    assert missing_production_settings(configured) == []
    assert production_problem({"AUDITSVC_ENV": "production", **configured}) is None
    assert production_problem({}) is None  # development: nothing needed
    assert production_problem({"DEBUG": "true"}) is None
    for debug in ("true", "1", "yes", "TRUE", "maybe"):
        problem = production_problem({"AUDITSVC_ENV": "production", **configured, "DEBUG": debug}) or ""
        assert "DEBUG is refused" in problem, debug
    assert production_problem({"AUDITSVC_ENV": "production", **configured, "DEBUG": "false"}) is None
    assert "AUDITSVC_ENV must be one of" in (production_problem({"AUDITSVC_ENV": "prod"}) or "")


def test_manage_py_refuses_to_start_in_production_without_its_settings(tmp_path):
    result = run([sys.executable, "manage.py", "check"], environment(tmp_path, AUDITSVC_ENV="production"))

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    for name in ("DATABASE_URL", "SECRET_KEY", "AUDIT_SIGNING_KEY", "AUDITSVC_DATA_KEY"):
        assert name in result.stderr
    assert not (tmp_path / "var").exists()  # no embedded database, no generated secret


def test_gunicorn_refuses_to_start_in_production_without_its_settings(tmp_path):
    env = environment(tmp_path, AUDITSVC_ENV="production", SECRET_KEY="x" * 50)
    command = [str(Path(sys.executable).parent / "gunicorn"), "auditsvc.wsgi", "-c", "gunicorn.conf.py",
               "-b", "127.0.0.1:0"]  # fmt: skip
    started = time.monotonic()

    result = run(command, env, timeout=30)

    assert result.returncode != 0
    assert time.monotonic() - started < 20
    assert "Traceback" not in result.stderr  # refused by the master, before any worker boots
    assert "these settings are missing: DATABASE_URL; AUDIT_SIGNING_KEY" in result.stderr
    assert "AUDITSVC_DATA_KEY" in result.stderr
    assert "SECRET_KEY" not in result.stderr.split("missing:")[1]


def test_a_configured_production_process_starts(tmp_path):
    env = environment(
        tmp_path, AUDITSVC_ENV="production", DATABASE_URL="postgres://u@127.0.0.1:1/none", SECRET_KEY="s" * 50,
        AUDIT_PUBLIC_KEYS=PUBLIC_KEY, ALLOWED_HOSTS="audit.example", AUDITSVC_DATA_KEY=DATA_KEY,
    )  # fmt: skip

    result = run([sys.executable, "manage.py", "check"], env)

    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "var").exists()


def test_production_never_seals_unsigned(tmp_path):
    env = environment(
        tmp_path, AUDITSVC_ENV="production", DATABASE_URL="postgres://u@127.0.0.1:1/none", SECRET_KEY="s" * 50,
        AUDIT_PUBLIC_KEYS=PUBLIC_KEY, AUDITSVC_DATA_KEY=DATA_KEY,
    )  # fmt: skip

    sealing = run([sys.executable, "manage.py", "seal_events"], env)
    auto = run([sys.executable, "manage.py", "check"], {**env, "AUDITSVC_AUTO_SEAL_SECONDS": "10"})

    assert sealing.returncode != 0
    assert "Production seals are signed, and this process has no AUDIT_SIGNING_KEY" in sealing.stderr
    assert auto.returncode != 0
    assert "AUDITSVC_AUTO_SEAL_SECONDS is set but AUDIT_SIGNING_KEY is not" in auto.stderr


def test_importing_settings_starts_no_database_server(tmp_path):
    code = (
        "import os; os.environ['DJANGO_SETTINGS_MODULE'] = 'auditsvc.settings'\n"
        "from django.conf import settings\n"
        "print(settings.EMBEDDED_DATABASE, settings.DATABASES['default']['HOST'])\n"
    )

    result = run([sys.executable, "-c", code], environment(tmp_path))

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", str((tmp_path / "var" / "pg").resolve())]
    assert not (tmp_path / "var" / "pg").exists()  # described, not started (nor even initialised)


def test_settings_raise_for_any_other_entry_point_in_production(monkeypatch):
    monkeypatch.setenv("AUDITSVC_ENV", "production")
    for name in _OURS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)

    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL; SECRET_KEY; AUDIT_SIGNING_KEY"):
        runpy.run_path(str(REPO_ROOT / "auditsvc" / "settings.py"))

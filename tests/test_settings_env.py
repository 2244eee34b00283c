from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.exceptions import ImproperlyConfigured

from auditsvc.env import env_bool, env_int, env_list, env_secret
from events.ingest.validation import parse_event
from events.ingest.write import ingest_events
from events.models import Seal
from tests.factories import SourceFactory
from tests.processes import database_url
from tests.test_deployment import DATA_KEY, PUBLIC_KEY, environment, run

NO_DATABASE = "postgres://u@127.0.0.1:1/none"  # for processes that must not get as far as one
OTHER_KEY = base64.b64encode(Ed25519PrivateKey.generate().private_bytes_raw()).decode()


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("1", True), ("OFF", False), ("", True), (None, True)])
def test_env_bool(monkeypatch, raw, expected):
    if raw is None:
        monkeypatch.delenv("X_FLAG", raising=False)
    else:
        monkeypatch.setenv("X_FLAG", raw)
    assert env_bool("X_FLAG", default=True) is expected


def test_env_bool_rejects_nonsense(monkeypatch):
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_FLAG must be a boolean"):
        env_bool("X_FLAG")


def test_env_int_bounds(monkeypatch):
    monkeypatch.setenv("X_INT", "5")
    assert env_int("X_INT", 1, minimum=1) == 5
    monkeypatch.setenv("X_INT", "0")
    with pytest.raises(ImproperlyConfigured, match="at least 1"):
        env_int("X_INT", 1, minimum=1)
    monkeypatch.setenv("X_INT", "ten")
    with pytest.raises(ImproperlyConfigured, match="must be an integer"):
        env_int("X_INT", 1)


def test_env_list_and_secret_file(monkeypatch, tmp_path):
    monkeypatch.setenv("X_LIST", " a, b ,,c ")
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    monkeypatch.delenv("X_SECRET", raising=False)
    monkeypatch.setenv("X_SECRET_FILE", str(secret))

    assert env_list("X_LIST", []) == ["a", "b", "c"]
    assert env_secret("X_SECRET") == "s3cret"


# --- The development signing key (var/dev-signing-key, made by make run) -------------------


def dev_environment(tmp_path: Path, **values: str) -> dict[str, str]:
    """A child's environment with no key of its own, its var dir in tmp_path, and the test
    run's switch (tests/settings.py) left out: as a developer's shell in the checkout."""
    env = environment(tmp_path, DATABASE_URL=NO_DATABASE)
    env.pop("AUDITSVC_USE_DEV_SIGNING_KEY", None)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return {**env, **values}


def make_dev_signing_key(env: dict[str, str]) -> str:
    """The key id of a key made as make run makes it."""
    key_file = Path(env["AUDITSVC_VAR_DIR"]) / "dev-signing-key"
    made = run([sys.executable, "manage.py", "create_signing_key", "--if-missing", "--output", str(key_file)], env)
    assert made.returncode == 0, made.stderr
    return made.stdout.split()[2]  # "Signing key <id> in <file>"


@pytest.mark.django_db(transaction=True)  # the commands run in processes of their own
def test_it_signs_and_verifies_with_the_dev_signing_key_in_commands_run_by_hand(tmp_path):
    env = dev_environment(tmp_path, DATABASE_URL=database_url())
    key_id = make_dev_signing_key(env)
    ingest_events(source=SourceFactory.create(), items=[parse_event({"type": "a.b"})])

    sealing = run([sys.executable, "manage.py", "seal_events", "--lag", "0"], env)
    verifying = run([sys.executable, "manage.py", "verify_events"], env)

    assert sealing.returncode == 0, sealing.stderr
    assert sealing.stdout.rstrip().endswith(", signed")
    assert Seal.objects.get().key_id == key_id
    assert verifying.returncode == 0, verifying.stdout + verifying.stderr
    assert "Signatures not checked" not in verifying.stderr


@pytest.mark.parametrize(
    ("values", "uses_it"),
    [
        ({}, True),
        ({"AUDITSVC_USE_DEV_SIGNING_KEY": "false"}, False),
        ({"AUDIT_SIGNING_KEY": OTHER_KEY}, False),  # a key of your own wins
    ],
)
def test_settings_use_the_dev_signing_key_only_without_a_key_of_your_own(tmp_path, values, uses_it):
    env = dev_environment(tmp_path, **values)
    make_dev_signing_key(dev_environment(tmp_path))
    key_file = tmp_path / "var" / "dev-signing-key"
    code = (
        "import os; os.environ['DJANGO_SETTINGS_MODULE'] = 'auditsvc.settings'\n"
        "from django.conf import settings\n"
        "print(settings.AUDIT_SIGNING_KEY)\n"
    )

    result = run([sys.executable, "-c", code], env)

    assert result.returncode == 0, result.stderr
    assert (result.stdout.strip() == key_file.read_text().strip()) is uses_it


def test_production_never_uses_the_dev_signing_key(tmp_path):
    make_dev_signing_key(dev_environment(tmp_path))
    env = dev_environment(
        tmp_path, AUDITSVC_ENV="production", SECRET_KEY="s" * 50, AUDIT_PUBLIC_KEYS=PUBLIC_KEY,
        AUDITSVC_DATA_KEY=DATA_KEY,
    )  # fmt: skip

    sealing = run([sys.executable, "manage.py", "seal_events"], env)

    assert sealing.returncode != 0
    assert "Production seals are signed, and this process has no AUDIT_SIGNING_KEY" in sealing.stderr


def test_the_test_run_ignores_the_checkouts_dev_signing_key(settings):
    # Whether var/dev-signing-key exists must not change what the tests see (tests/settings.py).
    assert settings.AUDITSVC_USE_DEV_SIGNING_KEY is False
    assert os.environ["AUDITSVC_USE_DEV_SIGNING_KEY"] == "false"  # and the processes they start

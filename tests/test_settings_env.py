from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from auditsvc.env import env_bool, env_int, env_list, env_secret


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

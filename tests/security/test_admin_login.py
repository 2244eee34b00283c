"""The admin login lockout (django-axes): per client and per username, behind the TLS proxy."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

PROXY = "10.0.0.1"


@pytest.fixture
def root(db, settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.AUDITSVC_TRUSTED_PROXIES = []
    User.objects.create_superuser("root", password="the right password")
    User.objects.create_superuser("alice", password="alice's password")


def attempt(client: Client, username: str, password: str, **meta: Any) -> int:
    return client.post("/admin/login/", {"username": username, "password": password}, **meta).status_code


def test_it_locks_a_client_after_repeated_failures(root):
    client = Client()

    failures = [attempt(client, "root", f"guess {n}") for n in range(3)]
    locked = client.post("/admin/login/", {"username": "root", "password": "the right password"})

    assert failures == [200, 200, 429]  # the form again with an error, until the third locks
    assert locked.status_code == 429
    assert locked["Retry-After"] == "900"
    assert "_auth_user_id" not in client.session


def test_a_successful_login_resets_the_count(root):
    client = Client()
    assert [attempt(client, "root", f"guess {n}") for n in range(2)] == [200, 200]
    assert attempt(client, "root", "the right password") == 302
    client.logout()

    # Two more failures: locked now only if the earlier two were still counted.
    assert [attempt(client, "root", f"again {n}") for n in range(2)] == [200, 200]
    assert attempt(client, "root", "the right password") == 302


def test_behind_the_trusted_proxy_one_guesser_does_not_lock_out_everyone(root, settings):
    settings.AUDITSVC_TRUSTED_PROXIES = ["10.0.0.0/24"]
    attacker = {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "203.0.113.5"}
    colleague = {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "198.51.100.7"}

    guesses = [attempt(Client(), f"user{n}", "guess", **attacker) for n in range(4)]

    assert guesses == [200, 200, 429, 429]  # the guesser's own address is locked
    assert attempt(Client(), "alice", "alice's password", **colleague) == 302


def test_without_trusted_proxies_a_forged_forwarded_header_changes_nothing(root):
    guesses = [
        attempt(Client(), f"user{n}", "guess", REMOTE_ADDR="203.0.113.5", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
        for n in range(4)
    ]

    assert guesses == [200, 200, 429, 429]


def test_a_forwarded_header_from_outside_the_proxies_is_not_believed(root, settings):
    settings.AUDITSVC_TRUSTED_PROXIES = [PROXY]
    direct = {"REMOTE_ADDR": "203.0.113.5"}

    guesses = [attempt(Client(), f"user{n}", "guess", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}", **direct) for n in range(4)]

    assert guesses == [200, 200, 429, 429]


def test_a_username_is_locked_whatever_the_address(root):
    guesses = [attempt(Client(), "root", f"guess {n}", REMOTE_ADDR=f"192.0.2.{n}") for n in range(3)]

    assert guesses == [200, 200, 429]
    assert attempt(Client(), "root", "the right password", REMOTE_ADDR="192.0.2.99") == 429

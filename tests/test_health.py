from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection


@contextmanager
def unreachable_database() -> Iterator[None]:
    """Point the default connection at a port nothing listens on, then restore it."""
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update({"HOST": "127.0.0.1", "PORT": "1"})
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


def test_healthz_answers_without_auth(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ok_with_the_database_migrated(db, client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "oldest_unsealed_seconds": None}


def test_readyz_reports_a_missing_database_as_503(client, django_db_blocker):
    with django_db_blocker.unblock(), unreachable_database():
        response = client.get("/readyz")
        healthz = client.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "unreachable"}  # no error text for anyone
    assert response["Retry-After"] == "5"
    assert healthz.status_code == 200


def test_unknown_api_routes_answer_in_the_error_shape(db, client):
    response = client.get("/api/v1/nothing-here")

    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "not_found"

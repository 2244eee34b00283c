from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import pytest
from django.apps import apps as django_apps
from django.conf import settings as settings_module
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import connections, transaction
from django.db.backends.postgresql.operations import DatabaseOperations
from django.http import HttpRequest, HttpResponseBase
from django.test.client import ClientHandler
from rest_framework.test import APIClient

from auditsvc.api.throttling import forget_cache_outage
from auditsvc.embedded_db import start_embedded_database_if_configured
from events.access_log import discard_pending_reads
from events.api import accept
from events.data_keys import forget_cached_data_keys
from events.ingest import group_commit, stream
from events.ingest.group_commit import stop_group_commit
from events.ingest.write import clear_caches
from events.integrity import signing
from events.keys import create_api_key, forget_cached_keys
from events.models import Source
from events.schemas import forget_cached_checkers
from tests.database import triggers_off
from tests.factories import SourceFactory
from tests.redis_servers import RedisServer, redis_server, stream_mode_on


@dataclass
class KeyedClient:
    """An APIClient that sends one API key, with the key's source and plaintext at hand."""

    client: APIClient
    source: Source
    key: str

    def post_json(self, path: str, body: object, **headers: str):  # type: ignore[no-untyped-def]
        return self.client.post(path, body, format="json", headers=headers)


def pytest_configure(config: pytest.Config) -> None:
    # The explicit start step of the test session: settings only describe the embedded server.
    start_embedded_database_if_configured()
    _test_clients_take_the_accept_path()


def _test_clients_take_the_accept_path() -> None:
    """Django's and DRF's test clients hand a request straight to Django's handler; auditsvc.wsgi
    puts the accept path in front of it (events.api.accept). The clients go the same way, so that
    every test of POST /api/v1/events runs through the path production takes (each client sets
    its accept path up once, as it does its middleware; AUDITSVC_ACCEPT_PATH off: Django's)."""
    through_django = ClientHandler.get_response

    def get_response(handler: ClientHandler, request: HttpRequest) -> HttpResponseBase:
        if settings_module.AUDITSVC_ACCEPT_PATH and accept.serves(request.META):
            accept_path: accept.AcceptPath | None = handler.__dict__.get("accept_path")
            if accept_path is None:
                accept_path = handler.__dict__["accept_path"] = accept.AcceptPath()
            if accept_path.takes(request):
                return accept_path.answer(request)
        response: HttpResponseBase = through_django(handler, request)
        return response

    ClientHandler.get_response = get_response  # type: ignore[method-assign, assignment]


@pytest.fixture(autouse=True)
def _group_committer_stopped() -> Iterator[None]:
    # The committer thread holds a connection of its own: closed after each test, so that the
    # test database can be flushed and, at the end, dropped.
    yield
    stop_group_commit()


@pytest.fixture
def production_write_path(monkeypatch: pytest.MonkeyPatch, transactional_db: None) -> None:
    """Every single event of the test goes through the group committer, as in production: no
    wrapping test transaction, and the in-transaction shortcut fails the test if taken."""

    def shortcut(**kwargs: object) -> NoReturn:
        raise AssertionError("a single event took the in-transaction shortcut instead of the group committer")

    assert settings_module.AUDITSVC_GROUP_COMMIT, "group commit is off: production's write path is not taken"
    monkeypatch.setattr(group_commit, "store_in_callers_transaction", shortcut)


create_auditors = importlib.import_module("events.migrations.0007_auditors_group").create_auditors


@pytest.fixture
def auditors_group(db: None) -> Group:
    """The Auditors group as its data migration makes it (a transactional test's flush removes it)."""
    create_auditors(django_apps, None)
    return Group.objects.get(name="Auditors")


@pytest.fixture
def staff_with(db: None) -> Callable[..., User]:
    """staff_with(username, *codenames): a staff user holding those permissions. They are made
    again first: a transactional test's flush empties auth_permission and django_content_type."""

    def make(username: str, *codenames: str) -> User:
        ContentType.objects.clear_cache()
        for config in django_apps.get_app_configs():
            create_permissions(config, verbosity=0)
        user = User.objects.create_user(username, is_staff=True)
        found = list(Permission.objects.filter(codename__in=codenames))
        assert len(found) == len(codenames), f"no such permission among {codenames}"
        user.user_permissions.add(*found)
        return user

    return make


@pytest.fixture(autouse=True)
def _reads_stored_when_asked(settings: Any) -> Iterator[None]:
    # A test's own transaction holds its rows: the reads it makes are stored when it calls
    # flush_access_log() (in that transaction), not by the background thread of the process.
    # The live-server tests (gunicorn) store theirs in the background, as production does.
    settings.AUDITSVC_AUDIT_READS_IN_BACKGROUND = False
    yield
    discard_pending_reads()


@pytest.fixture(autouse=True)
def _fresh_signing_keys() -> Iterator[None]:
    # Key settings are read once per process; tests that change them must not leak them.
    signing.forget_keys()
    yield
    signing.forget_keys()


@pytest.fixture(autouse=True, scope="session")
def _flush_past_the_append_only_triggers() -> Iterator[None]:
    # Transactional tests end with Django's flush (TRUNCATE), which the append-only triggers
    # refuse: the tests' flush runs with the triggers off (tests.database).
    flush = DatabaseOperations.execute_sql_flush

    def execute_sql_flush(self: DatabaseOperations, sql_list: list[str]) -> None:
        with transaction.atomic(using=self.connection.alias), triggers_off(self.connection):
            flush(self, sql_list)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DatabaseOperations, "execute_sql_flush", execute_sql_flush)
        yield


@pytest.fixture(autouse=True, scope="session")
def _no_persistent_connections() -> None:
    # Live-server threads would otherwise keep their connections open past the test run,
    # and the test database could not be dropped.
    connections.settings["default"]["CONN_MAX_AGE"] = 0


@pytest.fixture(autouse=True)
def _plain_static_files(settings: Any) -> None:
    # The manifest storage needs collectstatic; tests render pages without running it.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # Logins in tests (the lockout) need not cost PBKDF2's million rounds each.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _isolated_cache(settings: Any) -> None:
    # Rate-limit and lockout counters live in the shared cache (Redis in CI): a key prefix of
    # the test's own keeps them from leaking between tests and runs.
    default = dict(settings.CACHES["default"])
    default["KEY_PREFIX"] = f"test-{uuid.uuid4().hex}"
    settings.CACHES = {**settings.CACHES, "default": default}
    forget_cache_outage()  # one a test met (it killed its cache's Redis) is not the next one's


@pytest.fixture(autouse=True)
def _fresh_id_caches() -> Iterator[None]:
    # Tables are truncated between transactional tests; cached type/customer ids would dangle.
    clear_caches()
    forget_cached_keys()
    forget_cached_checkers()
    forget_cached_data_keys()
    yield
    clear_caches()
    forget_cached_keys()
    forget_cached_checkers()
    forget_cached_data_keys()


@pytest.fixture
def make_client(db: None) -> Callable[..., KeyedClient]:
    def make(source_slug: str = "billing", scopes: tuple[str, ...] = ("ingest", "read")) -> KeyedClient:
        source = SourceFactory.create(slug=source_slug)
        issued = create_api_key(source=source, scopes=list(scopes))
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.plaintext}")
        return KeyedClient(client=client, source=source, key=issued.plaintext)

    return make


@pytest.fixture
def api(make_client: Callable[..., KeyedClient]) -> KeyedClient:
    """A client with an ingest+read key of the 'billing' source."""
    return make_client()


@pytest.fixture(scope="session")
def durable_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of the tests' own with `appendfsync always` (stream mode's requirement)."""
    with redis_server(tmp_path_factory.mktemp("redis-aof")) as server:
        yield server


@pytest.fixture
def stream_mode(settings: Any, durable_redis: RedisServer) -> Iterator[RedisServer]:
    """Stream mode on the durable Redis, under a key prefix of this test's own."""
    settings.AUDITSVC_STREAM_PREFIX = f"test-{uuid.uuid4().hex[:12]}"
    with stream_mode_on(settings, durable_redis.url):
        stream.ensure_groups()
        yield durable_redis


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failure: a missing backend must not pass silently."""
    if os.environ.get("CI") == "true":
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        skipped = reporter.stats.get("skipped", []) if reporter else []
        if skipped:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            if reporter:
                reporter.write_line(f"CI=true: {len(skipped)} skipped test(s) count as failures.", red=True)

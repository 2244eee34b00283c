"""Hostile input to the admin: its forms answer a form error, its changelists refuse a lookup
they do not declare, its actions refuse ids that are not the list's; never a 500 (before, the
dead-letter requeue form, hand-written changelist lookups, an action's ids, a customer page's id
or type were)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.test import Client

from customers.models import Customer
from events.ingest.drain import Drainer
from events.ingest.stream import client as stream_client
from events.ingest.stream import dead_key
from events.keys import create_api_key
from events.models import ApiKey, EventType, Source
from tests.factories import CustomerFactory, SourceFactory

STREAM_PAGE = "/admin/events/event/stream/"
HOSTILE_REQUEUES = [
    {"shard": "x", "letter": "1-0"}, {"shard": "-1", "letter": "1-0"}, {"shard": "1e300", "letter": "1-0"},
    {"shard": "99999999999999999999", "letter": "1-0"}, {"shard": "1", "letter": "1-0"},  # one shard: 0
    {"shard": "0", "letter": "\x00"}, {"shard": "0", "letter": "not-an-id"}, {"shard": "0", "letter": "1-0-0"},
    {"shard": "0", "letter": "9" * 21 + "-0"}, {"shard": "0"}, {},
]  # fmt: skip


@pytest.fixture
def root(db) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root"))
    return client


def _messages(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


@pytest.mark.parametrize("data", HOSTILE_REQUEUES)
def test_the_requeue_form_refuses_hostile_input_with_a_message(root, api, stream_mode, settings, data):
    settings.AUDITSVC_STRICT_EVENT_TYPES = True
    api.post_json("/api/v1/events", {"type": "not.yet.registered"})
    Drainer().run(once=True)  # a dead letter, which must stay where it is

    response = root.post(STREAM_PAGE, data)

    assert response.status_code == 302
    assert any(message.startswith("Not requeued") for message in _messages(response)), _messages(response)
    assert stream_client().xlen(dead_key(0)) == 1


def test_the_requeue_form_in_direct_mode_says_there_is_no_stream(root):
    response = root.post(STREAM_PAGE, {"shard": "0", "letter": "1-0"})

    assert response.status_code == 302
    assert _messages(response) == ["Not requeued: the service runs in direct mode, without a stream."]


# Lookups a changelist does not declare: each once a 500 (an offset PostgreSQL refuses, a year
# or integer beyond range) or a query nobody designed (an unindexed column of a huge table).
UNDECLARED_LOOKUPS = [
    ("events/event", {"occurred_at__gte": "2026-01-01T00:00:00+23:00"}),
    ("events/event", {"received_at__lt": "9999-12-31T23:59:59-23:59"}),
    ("events/event", {"occurred_at__year": "99999999999"}),
    ("events/event", {"schema_version__gte": "99999999999999999999"}),
    ("events/event", {"actor": "bob"}),
    ("events/event", {"payload__contains": "x"}),
    ("events/eventtype", {"first_seen_at__gte": "2026-01-01T00:00:00+20:00"}),
    ("events/apikey", {"created_at__year": "99999999999"}),
    ("customers/customer", {"created_at__gte": "2026-01-01T00:00:00-23:00"}),
    ("auth/user", {"date_joined__gte": "2026-01-01T00:00:00+23:00"}),
]


@pytest.mark.parametrize(("changelist", "query"), UNDECLARED_LOOKUPS)
def test_a_changelist_refuses_a_lookup_it_does_not_declare(root, changelist, query):
    response = root.get(f"/admin/{changelist}/", query)

    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")  # Django's answer to lookups it cannot take


@pytest.mark.parametrize(
    "query",
    [{"type__id__exact": "99999999999999999999"}, {"source__id__exact": "x"}, {"schema_valid__exact": "maybe"},
     {"customer__isnull": "maybe"}, {"has_customer": "\x00"}, {"q": "\x00"}, {"p": "99999999999999999999"},
     {"o": "99.x.-1"}, {"occurred_at__range__gte_0": "99999-01-01", "occurred_at__range__gte_1": "25:00"}],
)  # fmt: skip
def test_the_declared_filters_take_hostile_values_without_a_500(root, query):
    response = root.get("/admin/events/event/", query)

    assert response.status_code in (200, 302)


@pytest.mark.parametrize("selected", [["x"], ["99999999999999999999"], ["1.5"], ["\x00"]])
def test_an_action_refuses_ids_that_are_not_the_lists(root, selected):
    key = create_api_key(source=SourceFactory.create(slug="billing"), scopes=["ingest"]).api_key

    response = root.post("/admin/events/apikey/", {"action": "revoke", "_selected_action": [*selected, str(key.pk)]})

    assert response.status_code == 302
    assert _messages(response) == ["The selection holds a value that is not an id of this list."]
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


@pytest.mark.parametrize(
    "path",
    ["/admin/customers/customer/²/change/", "/admin/customers/customer/99999999999999999999/change/",
     "/admin/customers/customer/{pk}/change/?timeline_type=%00",
     "/admin/customers/customer/{pk}/change/?timeline_page=x"],
)  # fmt: skip
def test_a_customer_page_takes_hostile_ids_and_types(root, path):
    customer = CustomerFactory.create(external_id="cus_1")

    response = root.get(path.format(pk=customer.pk))

    assert response.status_code in (200, 302)


# Add forms fed NUL characters, out-of-range numbers and unknown choices: a form error (200,
# the form again), and nothing added.
HOSTILE_FORMS = [
    ("events/eventtype", EventType, {"name": "a\x00b", "validation": "off", "schemas-TOTAL_FORMS": "0",
                                     "schemas-INITIAL_FORMS": "0"}),
    ("events/eventtype", EventType, {"name": "x", "description": "\x00", "validation": "strict",
                                     "schemas-TOTAL_FORMS": "99999999999999999999", "schemas-INITIAL_FORMS": "x"}),
    ("events/source", Source, {"slug": "\x00", "name": "x" * 10_000, "is_active": "maybe"}),
    ("events/apikey", ApiKey, {"source": "99999999999999999999", "name": "\x00", "scopes": ["ingest", "root"]}),
    ("events/apikey", ApiKey, {"source": "1e300", "name": "k", "scopes": "read"}),
    ("customers/customer", Customer, {"external_id": "\x00", "identities-TOTAL_FORMS": "1",
                                      "identities-INITIAL_FORMS": "0", "identities-0-system": "\x00"}),
    ("auth/user", User, {"username": "\x00", "password1": "\x00", "password2": "\x00"}),
]  # fmt: skip


@pytest.mark.parametrize(("model_path", "model", "data"), HOSTILE_FORMS)
def test_an_add_form_answers_hostile_input_with_a_form_error(root, model_path, model, data):
    before = model.objects.count()

    response = root.post(f"/admin/{model_path}/add/", data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors or response.context["errors"]
    assert model.objects.count() == before

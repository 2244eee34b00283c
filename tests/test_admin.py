"""The staff audit UI: permissions, read-only events, API keys, search, and query counts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from events.admin import short_time
from events.ingest.validation import parse_event
from events.ingest.write import ingest_events
from events.models import ApiKey, Event
from tests.factories import SourceFactory

XSS = "<script>alert('owned')</script>"


@pytest.fixture
def events(db) -> list[Event]:
    source = SourceFactory.create(slug="billing")
    raws = [
        {"type": "customer.linked", "customer": "cus_1", "customer_identities": [{"system": "stripe", "id": "cus_S1"}],
         "actor": "alice@example.com", "description": "linked the stripe account"},
        {"type": "billing.charged", "customer": "cus_1", "payload": {"amount": 19.99, "note": XSS},
         "description": "charged the card"},
        {"type": "billing.failed", "customer": "cus_2", "actor": "bob", "description": "card declined"},
    ]  # fmt: skip
    ingest_events(source=source, items=[parse_event(raw) for raw in raws])
    return list(Event.objects.order_by("occurred_at", "id"))


def login(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def auditor(db) -> Client:
    user = User.objects.create_user("auditor", is_staff=True)
    user.groups.add(Group.objects.get(name="Auditors"))
    return login(user)


@pytest.fixture
def staff(db) -> Client:
    return login(User.objects.create_user("staff", is_staff=True))


@pytest.fixture
def superuser(db) -> Client:
    return login(User.objects.create_superuser("root"))


def test_an_auditor_views_events_customers_types_and_sources(auditor, events):
    for name in ("events_event", "customers_customer", "events_eventtype", "events_source", "events_seal"):
        assert auditor.get(reverse(f"admin:{name}_changelist")).status_code == 200, name
    page = auditor.get(reverse("admin:events_event_change", args=[events[1].pk]))
    assert page.status_code == 200
    assert b'name="_save"' not in page.content  # read-only: no save button


def test_an_auditor_cannot_add_change_or_delete_events(auditor, events):
    event = events[0]

    assert auditor.get(reverse("admin:events_event_add")).status_code == 403
    assert auditor.post(reverse("admin:events_event_change", args=[event.pk]), {"actor": "x"}).status_code == 403
    assert auditor.post(reverse("admin:events_event_delete", args=[event.pk]), {"post": "yes"}).status_code == 403
    assert Event.objects.get(pk=event.pk).actor == "alice@example.com"


def test_a_superuser_cannot_change_events_either(superuser, events):
    event = events[0]

    assert superuser.get(reverse("admin:events_event_add")).status_code == 403
    assert superuser.post(reverse("admin:events_event_change", args=[event.pk]), {"actor": "x"}).status_code == 403
    assert superuser.post(reverse("admin:events_event_delete", args=[event.pk]), {"post": "yes"}).status_code == 403
    assert Event.objects.count() == 3


def test_staff_outside_auditors_see_nothing(staff, events):
    assert staff.get(reverse("admin:events_event_changelist")).status_code == 403
    assert staff.get(reverse("admin:customers_customer_changelist")).status_code == 403


def test_api_keys_are_for_superusers_only(auditor, superuser, events):
    assert auditor.get(reverse("admin:events_apikey_changelist")).status_code == 403
    assert auditor.get(reverse("admin:events_apikey_add")).status_code == 403
    assert superuser.get(reverse("admin:events_apikey_changelist")).status_code == 200


def test_a_superuser_creates_a_key_that_is_shown_once(superuser, events):
    source = events[0].source
    response = superuser.post(
        reverse("admin:events_apikey_add"), {"source": source.pk, "name": "ci", "scopes": ["ingest", "read"]}
    )

    assert response.status_code == 200
    api_key = ApiKey.objects.get()
    secret = response.context["secret"]
    assert secret.startswith(f"audit_{api_key.prefix}_")
    assert secret.encode() in response.content
    assert secret.split("_", 2)[2] not in api_key.secret_hash
    assert "no-store" in response["Cache-Control"]
    listing = superuser.get(reverse("admin:events_apikey_changelist"))
    assert secret.encode() not in listing.content
    assert api_key.scopes == ["ingest", "read"]


def test_a_superuser_revokes_keys(superuser, events):
    created = superuser.post(reverse("admin:events_apikey_add"), {"source": events[0].source.pk, "scopes": ["ingest"]})
    service = APIClient()
    service.credentials(HTTP_AUTHORIZATION=f"Bearer {created.context['secret']}")
    assert service.post("/api/v1/events", {"type": "a.b"}, format="json").status_code == 201

    superuser.post(
        reverse("admin:events_apikey_changelist"), {"action": "revoke", "_selected_action": [ApiKey.objects.get().pk]}
    )
    refused = service.post("/api/v1/events", {"type": "a.b"}, format="json")

    assert refused.status_code == 401
    assert refused.json()["errors"][0]["code"] == "key_revoked"


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("stripe:cus_S1", {0, 1}),  # an identity
        ("cus_S1", {0, 1}),  # its id alone
        ("cus_2", {2}),  # an external id
        ("bob", {2}),  # an actor
        ("declined", {2}),  # a word of the description
        ("card", {1, 2}),
    ],
)
def test_event_search(auditor, events, term, expected):
    response = auditor.get(reverse("admin:events_event_changelist"), {"q": term})

    found = {event.pk for event in response.context["cl"].result_list}
    assert found == {events[i].pk for i in expected}


def test_event_search_by_id(auditor, events):
    response = auditor.get(reverse("admin:events_event_changelist"), {"q": str(events[2].pk)})

    assert [e.pk for e in response.context["cl"].result_list] == [events[2].pk]


def test_customer_search_by_identity_and_timeline(auditor, events):
    found = auditor.get(reverse("admin:customers_customer_changelist"), {"q": "stripe:cus_S1"})
    customer = found.context["cl"].result_list[0]

    page = auditor.get(reverse("admin:customers_customer_change", args=[customer.pk]))
    filtered = auditor.get(
        reverse("admin:customers_customer_change", args=[customer.pk]), {"timeline_type": "billing.charged"}
    )

    assert customer.external_id == "cus_1"
    assert [e.pk for e in page.context["timeline"]] == [events[1].pk, events[0].pk]
    assert [e.pk for e in filtered.context["timeline"]] == [events[1].pk]
    assert b"cus_S1" in page.content


def test_the_payload_is_escaped(auditor, events):
    page = auditor.get(reverse("admin:events_event_change", args=[events[1].pk]))

    assert XSS.encode() not in page.content
    assert b"&lt;script&gt;" in page.content
    assert b'class="json-number">19.99<' in page.content
    assert b"not yet sealed" in page.content


def test_event_changelist_query_count_is_constant(auditor, events, django_assert_num_queries):
    source = events[0].source
    # session, user, user permissions, group permissions, type filter choices, source filter
    # choices, the planner's estimate (EXPLAIN), the bounded count (LIMIT 10,001; skipped when
    # the estimate is large), one page with type/source/customer joined, the log's own source
    # (hidden by default).
    with django_assert_num_queries(10):
        auditor.get(reverse("admin:events_event_changelist"))
    ingest_events(source=source, items=[parse_event({"type": f"t.{n % 5}", "customer": f"c{n}"}) for n in range(60)])
    with django_assert_num_queries(10):
        response = auditor.get(reverse("admin:events_event_changelist"))
    assert len(response.context["cl"].result_list) == 50


@time_machine.travel(datetime(2026, 6, 15, 12, 0, tzinfo=UTC), tick=False)
def test_list_times_read_short_in_the_deployments_time_zone_with_the_full_time_on_hover(settings):
    settings.TIME_ZONE = "Europe/Paris"  # UTC+2 in summer, UTC+1 in winter

    today = short_time(datetime(2026, 6, 15, 9, 30, 5, tzinfo=UTC))
    this_year = short_time(datetime(2026, 3, 2, 8, 15, tzinfo=UTC))
    before = short_time(datetime(2025, 11, 3, 13, 7, 8, 123456, tzinfo=UTC))

    assert today == '<time datetime="2026-06-15T09:30:05.000000Z" title="2026-06-15T09:30:05.000000Z">11:30:05</time>'
    assert this_year.endswith(">Mar 2, 09:15</time>")
    assert before.endswith(">2025-11-03 14:07</time>") and 'title="2025-11-03T13:07:08.123456Z"' in before


def test_the_root_leads_to_the_admin(db):
    response = Client().get("/")

    assert (response.status_code, response["Location"]) == (302, "/admin/")

"""The admin's side of the access log: pages read, changes made, the log's own events hidden."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse

from customers.models import Customer
from events.access_log import flush_access_log
from events.ingest.validation import parse_event
from events.ingest.write import ingest_events
from events.models import SERVICE_SOURCE, ApiKey, Event, Source
from events.protection import CIPHER_PREFIX, Place, readable_payloads
from events.service_events import READ_TYPE
from tests.factories import SourceFactory


@pytest.fixture
def billing_events(db) -> list[Event]:
    source = SourceFactory.create(slug="billing")
    raws = [
        {"type": "billing.charged", "customer": "cus_1", "customer_identities": [{"system": "stripe", "id": "cus_S1"}]},
        {"type": "billing.failed", "customer": "cus_2"},
    ]
    ingest_events(source=source, items=[parse_event(raw) for raw in raws])
    return list(Event.objects.order_by("occurred_at", "id"))


@pytest.fixture
def root(db) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root"))
    return client


def reads() -> list[Event]:
    return list(Event.objects.filter(type__name=READ_TYPE).order_by("occurred_at", "id"))


def changes(action: str) -> list[Event]:
    return list(Event.objects.filter(type__name=f"auditsvc.admin.{action}").order_by("occurred_at", "id"))


def test_list_and_event_pages_are_recorded_as_reads(root, billing_events):
    assert (
        root.get(reverse("admin:events_event_changelist"), {"type__id__exact": billing_events[0].type_id}).status_code
        == 200
    )
    assert root.get(reverse("admin:events_event_change", args=[billing_events[0].pk])).status_code == 200
    assert root.post(reverse("admin:events_event_changelist"), {}).status_code in (200, 302, 403)  # not a read

    flush_access_log()
    listed, shown = reads()
    assert listed.actor == "staff:root" and listed.source.slug == SERVICE_SOURCE
    assert listed.payload["via"] == "admin" and listed.payload["endpoint"] == "/admin/events/event/"
    assert listed.payload["returned"] == 1
    assert listed.payload["filters"] == {"type__id__exact": str(billing_events[0].type_id)}
    assert shown.payload["event"] == str(billing_events[0].pk) and shown.payload["customer"] == "cus_1"


def test_the_logs_own_events_are_hidden_from_the_list_unless_asked_for(root, billing_events):
    root.get(reverse("admin:events_event_changelist"))
    flush_access_log()  # now one auditsvc.read exists
    url = reverse("admin:events_event_changelist")

    def listed(**params: str) -> set[str]:
        response = root.get(url, params)
        assert response.status_code == 200
        return {str(event.pk) for event in response.context["cl"].result_list}

    billing = {str(event.pk) for event in billing_events}
    own = {str(event.pk) for event in reads()}
    assert own and listed() == billing
    assert listed(own="show") == billing | own
    assert listed(own="only") == own
    assert listed(source__id__exact=str(Source.objects.get(slug=SERVICE_SOURCE).pk)) == own  # asked by name


def test_a_customers_page_shows_who_looked_at_their_history(root, billing_events, api):
    customer = Customer.objects.get(external_id="cus_1")
    assert api.client.get("/api/v1/customers/cus_1/events").status_code == 200
    assert api.client.get("/api/v1/customers/cus_2/events").status_code == 200  # another customer
    page = reverse("admin:customers_customer_change", args=[customer.pk])
    root.get(page)
    flush_access_log()

    response = root.get(page)
    lookers = response.context["lookers"]
    assert [read.actor for read in lookers] == ["staff:root", f"key:{api.key.split('_')[1]}"]
    assert lookers[0].payload["returned"] == 1  # the timeline it showed
    assert b"Who looked at this customer" in response.content and b"staff:root" in response.content


def test_creating_and_revoking_a_key_are_recorded_without_the_secret(root, billing_events):
    source = billing_events[0].source
    created = root.post(reverse("admin:events_apikey_add"), {"source": source.pk, "name": "ci", "scopes": ["read"]})
    assert created.status_code == 200
    api_key = ApiKey.objects.get()

    (added,) = changes("add")
    assert added.actor == "staff:root" and added.payload["model"] == "events.apikey"
    assert added.payload["before"] is None and added.payload["after"]["prefix"] == api_key.prefix
    assert added.payload["after"]["secret_hash"].startswith("sha256:")
    assert api_key.secret_hash not in str(added.payload)
    assert created.context["secret"].split("_", 2)[2] not in str(added.payload)

    root.post(reverse("admin:events_apikey_changelist"), {"action": "revoke", "_selected_action": [api_key.pk]})
    root.post(reverse("admin:events_apikey_changelist"), {"action": "revoke", "_selected_action": [api_key.pk]})
    (revoked,) = changes("revoke")  # the second run changed nothing
    assert revoked.payload["before"]["revoked_at"] is None and revoked.payload["after"]["revoked_at"]
    assert revoked.payload["changed_fields"] == ["revoked_at"]


def test_the_logs_own_source_gets_no_keys(root, billing_events):
    own = SourceFactory.create(slug=SERVICE_SOURCE)
    response = root.post(reverse("admin:events_apikey_add"), {"source": own.pk, "scopes": ["ingest"]})

    assert response.status_code == 200 and "source" in response.context["adminform"].form.errors
    assert not ApiKey.objects.exists()


def test_editing_a_source_records_before_and_after(root, billing_events):
    source = billing_events[0].source
    url = reverse("admin:events_source_change", args=[source.pk])
    response = root.post(url, {"name": "Billing service", "description": "charges cards", "is_active": "on"})
    assert response.status_code == 302

    (changed,) = changes("change")
    assert (
        changed.payload["before"]["name"] != "Billing service" and changed.payload["after"]["name"] == "Billing service"
    )
    assert changed.payload["changed_fields"] == ["description", "name"]


def test_a_customers_identities_changed_in_the_admin_are_recorded_on_their_timeline(root, billing_events):
    customer = Customer.objects.get(external_id="cus_1")
    identity = customer.identities.get()
    url = reverse("admin:customers_customer_change", args=[customer.pk])
    form = {
        "email": "", "display_name": "Ada",
        "identities-TOTAL_FORMS": "2", "identities-INITIAL_FORMS": "1",
        "identities-MIN_NUM_FORMS": "0", "identities-MAX_NUM_FORMS": "1000",
        "identities-0-id": str(identity.pk), "identities-0-customer": str(customer.pk),
        "identities-0-system": "stripe", "identities-0-external_id": "cus_S1",
        "identities-1-customer": str(customer.pk), "identities-1-system": "hubspot", "identities-1-external_id": "77",
    }  # fmt: skip
    response = root.post(url, form)
    assert response.status_code == 302, response.context["errors"] if response.context else response

    (changed,) = changes("change")
    assert changed.payload["before"]["identities"] == ["stripe:cus_S1"]
    assert changed.payload["after"]["identities"] == ["hubspot:77", "stripe:cus_S1"]
    assert changed.payload["after"]["display_name"].startswith(CIPHER_PREFIX)  # a contact field is personal
    place = Place(str(changed.id), "auditsvc", "auditsvc.admin.change", "cus_1")
    (readable,) = readable_payloads([(changed.payload, place)])
    assert readable["after"]["display_name"] == "Ada"
    assert changed.customer_id == customer.pk  # part of the customer's history


def test_users_and_groups_changed_in_the_admin_are_recorded_without_passwords(root, db):
    group = root.post(reverse("admin:auth_group_add"), {"name": "Support"})
    assert group.status_code == 302
    user = User.objects.create_user("ada", password="old-Password-1")
    url = reverse("admin:auth_user_change", args=[user.pk])
    form = {"username": "ada", "is_active": "on", "is_staff": "on", "groups": [Group.objects.get(name="Support").pk],
            "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00", "initial-date_joined_0": "2026-01-01",
            "initial-date_joined_1": "00:00:00"}  # fmt: skip
    assert root.post(url, form).status_code == 302
    password_url = reverse("admin:auth_user_password_change", args=[user.pk])
    changed_password = root.post(password_url, {"password1": "new-Password-2", "password2": "new-Password-2"})
    assert changed_password.status_code == 302

    (added,) = changes("add")
    assert added.payload["model"] == "auth.group" and added.payload["after"]["name"] == "Support"
    staffed, password = changes("change")
    assert staffed.payload["before"]["is_staff"] is False and staffed.payload["after"]["is_staff"] is True
    assert staffed.payload["after"]["groups"] == ["Support"]
    assert password.payload["changed_fields"] == ["password"]
    assert password.payload["after"]["password"].startswith("sha256:")
    assert password.payload["changes"] == [{"changed": {"fields": ["password"]}}]
    everything = str([e.payload for e in Event.objects.all()])
    user.refresh_from_db()
    assert "new-Password-2" not in everything and user.password.split("$")[-1] not in everything

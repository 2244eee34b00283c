"""Event-type schemas through the API: registered, enforced with paths, warned, kept compatible."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from events.keys import create_api_key
from events.models import Event, EventSchema, EventType
from events.schema_registry import incompatibilities
from tests.conftest import KeyedClient

CHARGED: dict[str, Any] = {
    "type": "object",
    "properties": {
        "amount": {"type": "number", "minimum": 0},
        "currency": {"type": "string", "enum": ["EUR", "USD"]},
        "lines": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string"}}}},
    },
    "required": ["amount", "currency"],
}


@pytest.fixture
def registrar(make_client) -> Any:
    return make_client("schemas-team", scopes=("schema", "read"))


def schema_key_of(keyed: KeyedClient) -> KeyedClient:
    """A schema-scope key of keyed's own source, which owns the types it sent first."""
    issued = create_api_key(source=keyed.source, scopes=["schema", "read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.plaintext}")
    return KeyedClient(client=client, source=keyed.source, key=issued.plaintext)


def put_schema(client: Any, name: str, schema: Any, **extra: Any) -> Any:
    path = f"/api/v1/event-types/{name}/schema"
    query = extra.pop("query", "")
    return client.client.put(path + query, {"schema": schema, **extra}, format="json")


def test_a_schema_is_registered_and_listed(registrar):
    created = put_schema(registrar, "billing.charged", CHARGED, validation="enforce")
    again = put_schema(registrar, "billing.charged", CHARGED)

    assert created.status_code == 201 and created.json()["version"] == 1
    assert created.json()["registered_by"].startswith("key:")
    assert again.status_code == 200 and again.json()["version"] == 1  # nothing new
    listed = registrar.client.get("/api/v1/event-types/billing.charged/schemas").json()
    assert [(v["version"], v["schema"]) for v in listed] == [(1, CHARGED)]
    described = registrar.client.get("/api/v1/event-types/billing.charged").json()
    assert described["validation"] == "enforce" and described["schema_version"] == 1
    recorded = Event.objects.get(type__name="auditsvc.schema.registered")
    assert recorded.payload["version"] == 1 and recorded.payload["forced"] is False


def test_enforce_refuses_a_violation_with_the_path_into_the_payload(registrar, api):
    put_schema(registrar, "billing.charged", CHARGED, validation="enforce")

    single = api.post_json(
        "/api/v1/events", {"type": "billing.charged", "payload": {"amount": "12", "currency": "EUR"}}
    )
    batch = api.post_json("/api/v1/events", {"events": [
        {"type": "billing.charged", "payload": {"amount": 1, "currency": "EUR"}},
        {"type": "billing.charged", "payload": {"amount": -1, "currency": "GBP", "lines": [{"sku": 7}]}},
    ]})  # fmt: skip

    assert single.status_code == 400
    assert [(e["field"], e["code"]) for e in single.json()["errors"]] == [("payload.amount", "schema_violation")]
    assert "(schema v1)" in single.json()["errors"][0]["message"]
    assert batch.status_code == 400
    assert {e["field"] for e in batch.json()["errors"]} == {
        "events[1].payload.amount", "events[1].payload.currency", "events[1].payload.lines[0].sku"
    }  # fmt: skip
    assert not Event.objects.filter(type__name="billing.charged").exists()  # the batch stays all or nothing


def test_a_valid_event_records_the_version_it_was_checked_against(registrar, api):
    put_schema(registrar, "billing.charged", CHARGED, validation="enforce")

    response = api.post_json("/api/v1/events", {"type": "billing.charged", "payload": {"amount": 3, "currency": "USD"}})

    assert response.status_code == 201
    stored = Event.objects.get(type__name="billing.charged")
    assert (stored.schema_version, stored.schema_valid) == (1, True)


def test_warn_stores_the_event_flagged_and_counted(registrar, api, django_capture_on_commit_callbacks):
    put_schema(registrar, "billing.charged", CHARGED, validation="warn")

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post_json("/api/v1/events", {"type": "billing.charged", "payload": {"amount": "x"}})

    assert response.status_code == 201
    stored = Event.objects.get(type__name="billing.charged")
    assert (stored.schema_version, stored.schema_valid) == (1, False)
    assert EventType.objects.get(name="billing.charged").schema_violations == 1


def test_off_checks_nothing(registrar, api):
    put_schema(registrar, "billing.charged", CHARGED)  # validation stays off

    assert api.post_json("/api/v1/events", {"type": "billing.charged", "payload": {"amount": "x"}}).status_code == 201
    assert Event.objects.get(type__name="billing.charged").schema_version is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda s: {**s, "required": [*s["required"], "lines"]}, "newly required lines"),
        (lambda s: {**s, "properties": {**s["properties"], "amount": {"type": "integer"}}}, "type number is no longer"),
        (lambda s: {**s, "properties": {**s["properties"], "currency": {"type": "string", "enum": ["EUR"]}}},
         "enum no longer allows ['USD']"),
        (lambda s: {**s, "additionalProperties": False}, "other properties are no longer allowed"),
        (lambda s: {**s, "properties": {**s["properties"], "amount": {"type": "number", "minimum": 1}}},
         "minimum raised to 1"),
    ],
)  # fmt: skip
def test_an_incompatible_version_is_refused_with_the_reason(registrar, change, reason):
    put_schema(registrar, "billing.charged", CHARGED)

    refused = put_schema(registrar, "billing.charged", change(CHARGED))

    assert refused.status_code == 409
    errors = refused.json()["errors"]
    assert errors[0]["code"] == "incompatible_schema" and any(reason in e["message"] for e in errors), errors
    assert len(registrar.client.get("/api/v1/event-types/billing.charged/schemas").json()) == 1


def test_compatible_growth_is_a_new_version(registrar):
    put_schema(registrar, "billing.charged", CHARGED)
    grown = {
        **CHARGED,
        "properties": {**CHARGED["properties"], "amount": {"type": ["number", "string"]}, "note": {"type": "string"}},
    }

    response = put_schema(registrar, "billing.charged", grown)

    assert response.status_code == 201 and response.json()["version"] == 2


def test_a_schema_that_stored_events_would_fail_is_refused(api):
    api.post_json("/api/v1/events", {"type": "billing.charged", "payload": {"amount": "12", "currency": "EUR"}})
    stored = Event.objects.get(type__name="billing.charged")

    refused = put_schema(schema_key_of(api), "billing.charged", CHARGED)

    assert refused.status_code == 409
    assert f"stored event {stored.id} would be refused: payload.amount" in refused.json()["errors"][0]["message"]


def test_only_staff_may_force_and_forcing_is_recorded(registrar, db):
    put_schema(registrar, "billing.charged", CHARGED)
    narrowed = {**CHARGED, "required": [*CHARGED["required"], "lines"]}
    by_key = put_schema(registrar, "billing.charged", narrowed, query="?force=true")
    staff = User.objects.create_user("schema-admin", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="change_eventtype"))
    session = APIClient()
    session.force_login(staff)

    forced = session.put("/api/v1/event-types/billing.charged/schema?force=true", {"schema": narrowed}, format="json")

    assert by_key.status_code == 403
    assert forced.status_code == 201 and forced.json()["forced"] is True and forced.json()["version"] == 2
    record = Event.objects.filter(type__name="auditsvc.schema.registered").order_by("-occurred_at").first()
    assert record is not None and record.actor == "staff:schema-admin" and record.payload["forced"] is True
    assert any("newly required lines" in p for p in record.payload["incompatibilities"])


def test_who_may_register(api, db):
    assert put_schema(api, "billing.charged", CHARGED).status_code == 403  # ingest + read, no schema scope
    no_permission = APIClient()
    no_permission.force_login(User.objects.create_user("helpdesk", is_staff=True))
    response = no_permission.put("/api/v1/event-types/a.b/schema", {"schema": CHARGED}, format="json")
    assert response.status_code == 403


@pytest.mark.parametrize(
    "schema",
    [{"type": "nonsense"}, [], {"$ref": "http://169.254.169.254/latest/meta-data"}, {"minimum": "zero"}],
)
def test_a_broken_or_remote_schema_is_refused(registrar, schema):
    response = put_schema(registrar, "billing.charged", schema)

    assert response.status_code == 400 and response.json()["errors"][0]["code"] == "invalid_schema"


def test_unknown_fields_and_modes_are_refused(registrar):
    unknown = registrar.client.put("/api/v1/event-types/a.b/schema", {"schema": {}, "mode": "x"}, format="json")
    bad_mode = put_schema(registrar, "a.b", {}, validation="sometimes")

    assert unknown.status_code == 400 and unknown.json()["errors"][0]["field"] == "mode"
    assert bad_mode.status_code == 400 and bad_mode.json()["errors"][0]["field"] == "validation"


def test_the_compatibility_rules():
    assert incompatibilities({"type": "integer"}, {"type": "number"}) == []  # widening
    assert incompatibilities({}, {"type": "object"}) == ["payload: now only of type object, any type before"]
    assert incompatibilities({"maxLength": 10}, {"maxLength": 5}) == ["payload: maxLength lowered to 5"]
    assert incompatibilities({"items": {"type": "string"}}, {"items": {"type": "integer"}}) == [
        "payload[]: type string is no longer allowed"
    ]
    assert incompatibilities({}, {"pattern": "^a"}) == [
        "payload: new or changed keywords whose compatibility is not checked: pattern"
    ]


def test_the_admin_shows_versions_documented_fields_and_flagged_events(
    registrar, api, django_capture_on_commit_callbacks
):
    documented_schema = {**CHARGED, "properties": {**CHARGED["properties"],
                         "email": {"type": "string", "description": "who paid", "x-auditsvc": "personal"}}}  # fmt: skip
    put_schema(registrar, "billing.charged", documented_schema, validation="warn")
    api.post_json("/api/v1/events", {"type": "billing.untyped"})
    with django_capture_on_commit_callbacks(execute=True):
        api.post_json("/api/v1/events", {"type": "billing.charged", "payload": {"amount": "x"}})
    staff = APIClient()
    staff.force_login(User.objects.create_superuser("root"))
    charged = EventType.objects.get(name="billing.charged")

    page = staff.get(f"/admin/events/eventtype/{charged.pk}/change/").content.decode()
    without = staff.get("/admin/events/eventtype/", {"has_schema": "no"}).context["cl"].result_list
    flagged = Event.objects.get(type__name="billing.charged")
    event_page = staff.get(f"/admin/events/event/{flagged.pk}/change/").content.decode()
    violating = staff.get("/admin/events/event/", {"schema_valid__exact": "0"}).context["cl"].result_list

    assert "From schema v1." in page and "<code>payload.amount</code>" in page and "required" in page
    assert "who paid [personal]" in page and "payload.lines[].sku" in page
    assert [t.name for t in without if not t.name.startswith("auditsvc.")] == ["billing.untyped"]
    assert "violates v1" in event_page
    assert [e.pk for e in violating] == [flagged.pk]


def test_stream_mode_refuses_a_violation_before_accepting_it(registrar, api, stream_mode):
    put_schema(registrar, "billing.charged", CHARGED, validation="enforce")

    refused = api.post_json(
        "/api/v1/events", {"type": "billing.charged", "payload": {"amount": "x", "currency": "EUR"}}
    )
    accepted = api.post_json("/api/v1/events", {"type": "billing.charged", "payload": {"amount": 1, "currency": "EUR"}})

    assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "payload.amount"
    assert accepted.status_code == 202


def test_a_source_registers_schemas_only_for_the_types_it_owns(api, registrar, staff_with):
    api.post_json("/api/v1/events", {"type": "billing.charged", "payload": {"amount": 1, "currency": "EUR"}})
    assert put_schema(registrar, "team.audited", CHARGED).status_code == 201  # unseen: the registrar claims it
    api.post_json("/api/v1/events", {"type": "team.audited", "payload": {"amount": 1, "currency": "EUR"}})
    registrations = Event.objects.filter(type__name="auditsvc.schema.registered").count()

    foreign = put_schema(registrar, "billing.charged", CHARGED, validation="enforce")
    not_ours = put_schema(schema_key_of(api), "team.audited", {**CHARGED, "required": []})

    for refused in (foreign, not_ours):
        assert refused.status_code == 403
        assert [(e["field"], e["code"]) for e in refused.json()["errors"]] == [("name", "not_type_owner")]
    assert "belongs to source 'billing'" in foreign.json()["errors"][0]["message"]
    assert not EventSchema.objects.filter(type__name="billing.charged").exists()
    assert EventType.objects.get(name="billing.charged").validation == "off"
    assert Event.objects.filter(type__name="auditsvc.schema.registered").count() == registrations
    listed = {t["name"]: t["owner"] for t in api.client.get("/api/v1/event-types").json()}
    assert listed["billing.charged"] == "billing" and listed["team.audited"] == "schemas-team"
    assert put_schema(schema_key_of(api), "billing.charged", CHARGED).status_code == 201  # the owner may
    session = APIClient()
    session.force_login(staff_with("schema-admin", "change_eventtype"))
    staff_put = session.put("/api/v1/event-types/team.audited/schema", {"schema": {**CHARGED, "required": []}},
                            format="json")  # fmt: skip
    assert staff_put.status_code == 201  # staff, for any type
    assert EventType.objects.get(name="team.audited").owner == registrar.source  # unchanged by staff


def test_staff_name_an_owner_and_the_logs_own_types_stay_unchecked_in_the_admin(api, registrar, staff_with):
    api.post_json("/api/v1/events", {"type": "billing.charged", "payload": {"amount": 1, "currency": "EUR"}})
    client = Client()
    client.force_login(staff_with("types-admin", "change_eventtype", "add_eventtype", "view_eventtype"))
    charged = EventType.objects.get(name="billing.charged")
    form = {"name": "billing.charged", "description": "", "validation": "off", "owner": registrar.source.pk}

    moved = client.post(reverse("admin:events_eventtype_change", args=[charged.pk]), form)
    added = client.post(reverse("admin:events_eventtype_add"), {**form, "name": "auditsvc.read.fake"})
    own = EventType.objects.get(name="auditsvc.admin.change")  # the record of the change just made
    page = client.get(reverse("admin:events_eventtype_change", args=[own.pk])).content.decode()

    assert moved.status_code == 302
    assert put_schema(registrar, "billing.charged", CHARGED).status_code == 201
    assert put_schema(schema_key_of(api), "billing.charged", {**CHARGED, "required": []}).status_code == 403
    assert added.status_code == 200 and "the log&#x27;s own" in added.content.decode()
    assert not EventType.objects.filter(name="auditsvc.read.fake").exists()
    assert 'name="validation"' not in page and 'name="owner"' not in page

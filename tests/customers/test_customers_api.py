"""GET /api/v1/customers and /customers/{external_id}: lookups, pages, the summary, 404s."""

from __future__ import annotations

import pytest

from events.ingest.validation import parse_event
from events.ingest.write import ingest_events
from tests.factories import CustomerFactory, CustomerIdentityFactory

URL = "/api/v1/customers"


@pytest.fixture
def customers(api):
    """cus_00 … cus_24; cus_03 has a Stripe identity and an e-mail address."""
    made = [CustomerFactory.create(external_id=f"cus_{n:02}") for n in range(25)]
    made[3].email = "Ada@Example.com"
    made[3].save()
    CustomerIdentityFactory.create(customer=made[3], system="stripe", external_id="cus_S3")
    return made


def walk(api, params: dict[str, object], page_size: int = 7) -> list[str]:
    seen: list[str] = []
    response = api.client.get(URL, {**params, "page_size": page_size})
    for _ in range(20):
        assert response.status_code == 200, response.content
        seen += [customer["external_id"] for customer in response.json()["results"]]
        if not response.json()["next"]:
            return seen
        response = api.client.get(response.json()["next"])
    raise AssertionError("no last page")


@pytest.mark.parametrize(
    "params",
    [{"external_id": "cus_03"}, {"identity": "stripe:cus_S3"}, {"email": "ada@example.COM"},
     {"search": "stripe:cus_S3"}, {"search": "cus_S3"}, {"search": "cus_03"}, {"search": "ADA@example.com"}],
)  # fmt: skip
def test_it_finds_a_customer_by_each_of_its_names(api, customers, params):
    body = api.client.get(URL, params).json()

    assert [c["external_id"] for c in body["results"]] == ["cus_03"]
    assert body["results"][0]["identities"] == [{"system": "stripe", "id": "cus_S3"}]


@pytest.mark.parametrize("identity", ["stripe", "stripe:", ":cus_S3", "crm:cus_S3"])
def test_an_incomplete_or_foreign_identity_finds_nobody(api, customers, identity):
    assert api.client.get(URL, {"identity": identity}).json()["results"] == []


def test_it_pages_through_every_customer_in_order(api, customers):
    forward = walk(api, {})
    backward = walk(api, {"ordering": "-external_id"})

    assert forward == [f"cus_{n:02}" for n in range(25)]
    assert backward == forward[::-1]


def test_page_mode_counts(api, customers):
    body = api.client.get(URL, {"page": 2, "page_size": 10}).json()

    assert [c["external_id"] for c in body["results"]] == [f"cus_{n:02}" for n in range(10, 20)]
    assert body["metadata"]["total_records"] == 25
    assert body["metadata"]["last_page"] == 3


def test_the_list_costs_the_same_queries_however_many_identities(api, customers, django_assert_num_queries):
    for customer in customers[:10]:
        CustomerIdentityFactory.create(customer=customer, system="crm")
    # 1. the API key (cached after the first request) is not looked up again;
    # 2. the page of customers; 3. their identities, prefetched in one query.
    api.client.get(URL)
    with django_assert_num_queries(2):
        assert api.client.get(URL, {"page_size": 20}).status_code == 200


def test_the_detail_summarises_the_customers_events(api, customers):
    raws = [{"type": "a.b", "customer": "cus_03", "occurred_at": f"2026-11-0{day}T10:00:00Z"} for day in (3, 1, 2)]
    ingest_events(source=api.source, items=[parse_event(raw) for raw in raws])

    detail = api.client.get(f"{URL}/cus_03").json()
    quiet = api.client.get(f"{URL}/cus_04").json()

    assert (detail["event_count"], detail["first_event_at"], detail["last_event_at"]) == (
        3, "2026-11-01T10:00:00Z", "2026-11-03T10:00:00Z",
    )  # fmt: skip
    assert detail["identities"] == [{"system": "stripe", "id": "cus_S3"}]
    assert detail["email"] == "Ada@Example.com"
    assert (quiet["event_count"], quiet["first_event_at"]) == (0, None)


@pytest.mark.parametrize("path", [f"{URL}/nobody", f"{URL}/nobody/events", f"{URL}/a%00b"])
def test_an_unknown_customer_is_a_404_in_the_error_shape(api, path):
    response = api.client.get(path)

    assert response.status_code == 404
    assert response.json()["errors"] == [
        {"field": "external_id", "code": "not_found", "message": "No customer with this external id."}
    ]


def test_an_unknown_filter_is_a_400(api, customers):
    response = api.client.get(URL, {"colour": "red"})

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "unknown_parameter"

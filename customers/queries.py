"""Customer lookups for the API and the admin."""

from __future__ import annotations

from django.db.models import Count, Max, Min, Q, QuerySet

from customers.identities import parse_identity
from customers.models import Customer, CustomerIdentity
from events.models import Event


def customers_queryset() -> QuerySet[Customer]:
    return Customer.objects.prefetch_related("identities")


def customer_with_event_summary(external_id: str) -> Customer | None:
    """The customer with first_event_at, last_event_at and event_count set (one index-only scan
    of event_customer_occurred), or None."""
    if "\x00" in external_id:  # no customer has one; PostgreSQL text cannot even hold it
        return None
    customer = customers_queryset().filter(external_id=external_id).first()
    if customer is None:
        return None
    summary = Event.objects.filter(customer_id=customer.id).aggregate(
        first_event_at=Min("occurred_at"), last_event_at=Max("occurred_at"), event_count=Count("id")
    )
    for name, value in summary.items():
        setattr(customer, name, value)
    return customer


def customer_ids_for(reference: str, *, any_system: bool = False) -> list[int]:
    """Customers matching an external id, or an identity written `system:id`; with any_system,
    also an identity's id in whatever system."""
    if "\x00" in reference:  # no id has one; PostgreSQL text cannot even hold it
        return []
    # A UNION of two unique-index lookups; an OR across the join would scan customers.
    by_external_id = Customer.objects.filter(external_id=reference).values_list("id", flat=True)
    parsed = parse_identity(reference)
    identity = Q(system=parsed[0], external_id=parsed[1]) if parsed else Q(pk__in=[])
    if any_system:
        identity |= Q(external_id=reference)  # customer_identity_external_id
    by_identity = CustomerIdentity.objects.filter(identity).values_list("customer_id", flat=True)
    return list(by_external_id.union(by_identity))


def search_customers(customers: QuerySet[Customer], term: str) -> QuerySet[Customer]:
    """Exact, index-served matches of one search term: external id, an identity (`system:id`,
    or its id in any system) or email (the API's `search`, the admin's search box)."""
    return customers.filter(Q(id__in=customer_ids_for(term, any_system=True)) | Q(email__iexact=term))

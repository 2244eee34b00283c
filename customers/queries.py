"""Customer lookups for the API and the admin."""

from __future__ import annotations

from django.db.models import Count, Max, Min, QuerySet

from customers.models import Customer
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

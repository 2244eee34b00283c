from __future__ import annotations

import django_filters
from django.db.models import QuerySet

from customers.identities import parse_identity
from customers.models import Customer, CustomerIdentity
from customers.queries import search_customers
from events.api.filters import StrictCharFilter


class CustomerFilterSet(django_filters.FilterSet):
    """Exact, index-served lookups: external id, an identity `system:id`, or email."""

    external_id = StrictCharFilter(field_name="external_id", lookup_expr="exact")
    identity = StrictCharFilter(method="filter_identity", help_text="`system:id`, e.g. stripe:cus_42")
    email = StrictCharFilter(method="filter_email", help_text="case-insensitive, exact")
    search = StrictCharFilter(method="filter_search", help_text="any of: external id, identity, email")

    class Meta:
        model = Customer
        fields: list[str] = []

    def filter_identity(self, queryset: QuerySet[Customer], name: str, value: str) -> QuerySet[Customer]:
        identity = parse_identity(value)
        if identity is None:
            return queryset.none()
        system, external_id = identity
        return queryset.filter(
            id__in=CustomerIdentity.objects.filter(system=system, external_id=external_id).values("customer_id")
        )

    def filter_email(self, queryset: QuerySet[Customer], name: str, value: str) -> QuerySet[Customer]:
        return queryset.filter(email__iexact=value)  # lower(email) = lower(?): customer_email_lower

    def filter_search(self, queryset: QuerySet[Customer], name: str, value: str) -> QuerySet[Customer]:
        return search_customers(queryset, value)

"""Customers with their identities and their timeline across every service."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from auditsvc.counting import EstimatedCountPaginator
from customers.models import Customer, CustomerIdentity
from customers.queries import search_customers
from events.models import Event, EventType

TIMELINE_PAGE_SIZE = 25


class CustomerIdentityInline(admin.TabularInline):  # type: ignore[type-arg]
    model = CustomerIdentity
    fields = ["system", "external_id", "created_at"]
    readonly_fields = ["created_at"]
    extra = 0


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["external_id", "display_name", "email", "created_at"]
    search_fields = ["external_id"]
    search_help_text = "An external id, an identity (system:id, or just the id) or an email."
    ordering = ["external_id"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    inlines = [CustomerIdentityInline]
    readonly_fields = ["created_at"]
    change_form_template = "admin/customers/customer/change_form.html"

    class Media:
        css = {"all": ["events/admin.css"]}

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*self.readonly_fields, "external_id"] if obj else self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # events point at customers; an audit trail keeps its subjects

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Customer], search_term: str
    ) -> tuple[QuerySet[Customer], bool]:
        term = search_term.strip()
        return (search_customers(queryset, term) if term else queryset), False

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return super().change_view(
            request, object_id, form_url, {**(extra_context or {}), **_timeline(request, object_id)}
        )


def _timeline(request: HttpRequest, customer_id: str) -> dict[str, Any]:
    """What happened to the customer, newest first, paginated, optionally of one type."""
    if not customer_id.isdigit():
        return {}
    events = Event.objects.filter(customer_id=int(customer_id)).select_related("type", "source")
    type_name = request.GET.get("timeline_type", "")
    if type_name:
        events = events.filter(type__name=type_name)
    paginator = EstimatedCountPaginator(events.order_by("-occurred_at", "-id"), TIMELINE_PAGE_SIZE)
    page = paginator.get_page(request.GET.get("timeline_page"))
    return {
        "timeline": page,
        "timeline_type": type_name,
        "timeline_types": EventType.objects.order_by("name").values_list("name", flat=True),
        "timeline_is_estimate": paginator.count_is_estimate,
    }

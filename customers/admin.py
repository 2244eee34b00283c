"""Customers with their identities and their timeline across every service."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from auditsvc.counting import EstimatedCountPaginator
from customers.models import Customer, CustomerIdentity
from customers.queries import search_customers
from events.admin_audit import AuditedChanges, AuditedReads, snapshot
from events.models import SERVICE_SOURCE, CustomerDataKey, Event, EventType
from events.service_events import READ_TYPE

TIMELINE_PAGE_SIZE = 25


class CustomerIdentityInline(admin.TabularInline):  # type: ignore[type-arg]
    model = CustomerIdentity
    fields = ["system", "external_id", "created_at"]
    readonly_fields = ["created_at"]
    extra = 0


@admin.register(Customer)
class CustomerAdmin(AuditedReads, AuditedChanges):
    list_display = ["external_id", "display_name", "email", "created_at"]
    search_fields = ["external_id"]
    search_help_text = "An external id, an identity (system:id, or just the id) or an email."
    ordering = ["external_id"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    inlines = [CustomerIdentityInline]
    readonly_fields = ["created_at", "personal_data"]
    change_form_template = "admin/customers/customer/change_form.html"

    class Media:
        css = {"all": ["events/admin.css"]}

    audit_read_of = "customers"
    audit_personal_filters = ("q",)  # the search box takes an e-mail too

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*self.readonly_fields, "external_id"] if obj else self.readonly_fields

    @admin.display(description="personal data")
    def personal_data(self, customer: Customer) -> str:
        """Whether its events' personal fields are readable, or erased (docs/privacy.md)."""
        keys = list(CustomerDataKey.objects.filter(customer=customer.external_id).order_by("created_at"))
        live = [key for key in keys if key.erased_at is None]
        erased = [key for key in keys if key.erased_at is not None]
        parts = []
        if erased:
            parts.append(f"erased {erased[-1].erased_at:%Y-%m-%d %H:%M} UTC (manage.py erase_customer)")
        if live:
            parts.append(f"encrypted under its data key since {live[0].created_at:%Y-%m-%d %H:%M} UTC")
        return "; ".join(parts) or "none stored"

    def audit_state(self, obj: Any) -> dict[str, Any]:
        identities = obj.identities.order_by("system", "external_id") if obj.pk else []
        return {**snapshot(obj), "identities": [f"{i.system}:{i.external_id}" for i in identities]}

    def audit_customer(self, obj: Any) -> str:
        return str(obj.external_id)

    def audit_object_read(self, obj: Any, context: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
        timeline = context.get("timeline")
        return len(timeline) if timeline is not None else 0, "events", {"customer": obj.external_id}

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
    if not (customer_id.isascii() and customer_id.isdigit()):  # "²".isdigit() too
        return {}
    events = Event.objects.filter(customer_id=int(customer_id)).select_related("type", "source")
    type_name = request.GET.get("timeline_type", "")
    if "\x00" in type_name:  # no type is named so, and PostgreSQL cannot even compare it
        events = events.none()
    elif type_name:
        events = events.filter(type__name=type_name)
    paginator = EstimatedCountPaginator(events.order_by("-occurred_at", "-id"), TIMELINE_PAGE_SIZE)
    page = paginator.get_page(request.GET.get("timeline_page"))
    return {
        "timeline": page,
        "lookers": who_looked(int(customer_id)),
        "timeline_type": type_name,
        "timeline_types": EventType.objects.order_by("name").values_list("name", flat=True),
        "timeline_is_estimate": paginator.count_is_estimate,
    }


def who_looked(customer_id: int, limit: int = 20) -> list[Event]:
    """The latest reads that showed this customer's history (API or admin), newest first."""
    external_id = Customer.objects.filter(pk=customer_id).values_list("external_id", flat=True).first()
    if external_id is None:
        return []
    reads = Event.objects.filter(
        type__name=READ_TYPE, source__slug=SERVICE_SOURCE, payload__contains={"customer": external_id}
    )
    return list(reads.order_by("-occurred_at", "-id")[:limit])

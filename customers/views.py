from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from auditsvc.api.filtering import StrictFilterBackend
from auditsvc.api.pagination import Ordering, choose_ordering, each, paginate
from auditsvc.api.permissions import HasScope
from auditsvc.errors import FieldError, ProblemError
from customers.filters import CustomerFilterSet
from customers.models import Customer
from customers.queries import customer_with_event_summary, customers_queryset
from customers.serializers import CustomerDetailSerializer, CustomerSerializer
from events.api.audited import AuditedReads
from events.api.filters import EventFilterSet
from events.api.views import ERRORS, EVENT_PAGE, NOT_FOUND, PAGINATION_PARAMETERS, event_page, readable_events
from events.models import SCOPE_READ

CUSTOMER_ORDERINGS = {
    "external_id": Ordering("external_id", ('"customers_customer".external_id',), ("external_id",), False),
    "-external_id": Ordering("-external_id", ('"customers_customer".external_id',), ("external_id",), True),
}


# A page object, not an array (drf-spectacular would wrap a serializer of a `list` action).
CUSTOMER_PAGE = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description="Cursor mode: `{next, previous, results: [customer]}`; page mode: `{metadata, results}`.",
    examples=[
        OpenApiExample(
            "cursor page",
            {
                "next": None,
                "previous": None,
                "results": [
                    {
                        "external_id": "cus_42",
                        "email": "",
                        "display_name": "",
                        "created_at": "2026-11-24T04:30:56.779239Z",
                        "identities": [{"system": "stripe", "id": "cus_S42"}],
                    }
                ],
            },
        )
    ],
)


def _not_found() -> ProblemError:
    return ProblemError([FieldError("external_id", "not_found", "No customer with this external id.")], status=404)


class CustomerViewSet(AuditedReads, viewsets.GenericViewSet):  # type: ignore[type-arg]
    """Customers by external id, with their identities and their timeline of events."""

    audit_read_of = "customers"
    audit_read_of_action = {"events": "events"}
    audit_personal_filters = ("email", "search")  # an e-mail, or a term that may be one
    permission_classes = [HasScope]
    required_scope = SCOPE_READ
    filter_backends = [StrictFilterBackend]
    filterset_class = CustomerFilterSet
    serializer_class = CustomerSerializer
    lookup_field = "external_id"
    lookup_value_regex = "[^/]+"
    read_own_actions = ("events",)  # a read:own key sees its own events of the customer, nothing else

    def get_queryset(self) -> QuerySet[Customer]:
        return customers_queryset()

    @extend_schema(
        parameters=[
            OpenApiParameter("ordering", str, enum=list(CUSTOMER_ORDERINGS), description="default external_id"),
            *PAGINATION_PARAMETERS[1:],  # cursor, page, page_size
        ],
        responses={200: CUSTOMER_PAGE, **ERRORS},
    )
    def list(self, request: Request) -> Response:
        ordering = choose_ordering(request, CUSTOMER_ORDERINGS, "external_id")
        customers = self.filter_queryset(self.get_queryset())
        return Response(
            paginate(request, customers, ordering=ordering, render=each(lambda c: CustomerSerializer(c).data))
        )

    @extend_schema(responses={200: CustomerDetailSerializer, 404: NOT_FOUND, **ERRORS})
    def retrieve(self, request: Request, external_id: str) -> Response:
        customer = customer_with_event_summary(external_id)
        if customer is None:
            raise _not_found()
        return Response(CustomerDetailSerializer(customer).data)

    @extend_schema(parameters=PAGINATION_PARAMETERS, responses={200: EVENT_PAGE, 404: NOT_FOUND, **ERRORS})
    @action(detail=True, methods=["get"], filterset_class=EventFilterSet)
    def events(self, request: Request, external_id: str) -> Response:
        """The customer's timeline across all services: the event filters and pagination apply."""
        customer = None if "\x00" in external_id else Customer.objects.filter(external_id=external_id).first()
        if customer is None:
            raise _not_found()
        return event_page(request, self.filter_queryset(readable_events(request).filter(customer_id=customer.id)))

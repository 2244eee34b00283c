"""The API's side of the access log (events.access_log): each read answered is recorded."""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from rest_framework.request import Request
from rest_framework.response import Response

from auditsvc.routes import route_of
from events.access_log import query_filters, record_read


def api_actor(request: Request) -> str:
    api_key = request.auth
    if api_key is not None and hasattr(api_key, "prefix"):
        return f"key:{api_key.prefix}"
    return f"staff:{request.user.get_username()}"  # signed in to the admin (session)


def record_api_read(
    request: Request, *, returned: int, of: str, details: dict[str, Any], personal: tuple[str, ...] = ()
) -> None:
    """personal: the query parameters that search a customer's contact fields (kept as HMACs)."""
    api_key = request.auth
    # The cursor is opaque and long; the filters say what was asked.
    filters = query_filters(request.query_params, skip=("cursor",), personal=personal)
    context: dict[str, Any] = {"of": of, "filters": filters, **details}
    if api_key is not None and hasattr(api_key, "source"):
        context["key_source"] = api_key.source.slug
    if request_id := getattr(request._request, "request_id", None):
        context["request_id"] = request_id
    record_read(actor=api_actor(request), via="api", endpoint=route_of(request._request), returned=returned,
                details=context)  # fmt: skip


class AuditedReads:
    """A viewset mixin: every GET it answers with 2xx is recorded. A streamed answer (the export)
    records itself when it ends, with the number of rows it sent."""

    audit_read_of = "events"  # what the answer's items are; audit_read_of_action overrides per action
    audit_read_of_action: dict[str, str] = {}
    audit_personal_filters: tuple[str, ...] = ()  # parameters searching contact fields: recorded as HMACs

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        if (
            request.method == "GET"
            and 200 <= response.status_code < 300
            and isinstance(response, Response)
            and not isinstance(response, StreamingHttpResponse)
        ):
            record_api_read(
                request,
                returned=_items(response.data),
                of=self.read_of(),
                details=self.read_details(response),
                personal=self.audit_personal_filters,
            )
        return response

    def read_of(self) -> str:
        return self.audit_read_of_action.get(getattr(self, "action", None) or "", self.audit_read_of)

    def read_details(self, response: Response) -> dict[str, Any]:
        """What was shown besides the filters: the event or customer of a detail URL."""
        details: dict[str, Any] = {}
        kwargs: dict[str, Any] = getattr(self, "kwargs", {})
        if "pk" in kwargs:
            details["event"] = kwargs["pk"]
            event = response.data.get("event", response.data) if isinstance(response.data, dict) else {}
            if isinstance(event, dict) and event.get("customer"):
                details["customer"] = event["customer"]
        if "external_id" in kwargs:
            details["customer"] = kwargs["external_id"]
        return details


def _items(data: Any) -> int:
    """Items in an answer: a page's results, a list's entries, else one object."""
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        return len(data["results"])
    if isinstance(data, list):
        return len(data)
    return 1

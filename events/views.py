from __future__ import annotations

from django.conf import settings
from rest_framework import status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from auditsvc.api.permissions import HasScope
from auditsvc.api.request_body import read_json_body
from events.ingest import ingest_events
from events.models import SCOPE_INGEST, ApiKey
from events.serializers import event_output
from events.validation import parse_ingest_body


class EventViewSet(viewsets.GenericViewSet):  # type: ignore[type-arg]
    """Events of the calling service. POST stores one event or a batch (scope `ingest`)."""

    permission_classes = [HasScope]
    required_scopes = {"create": SCOPE_INGEST}

    def create(self, request: Request) -> Response:
        # Parsed by events.validation, not a DRF serializer: see that module for why.
        body = read_json_body(request, max_bytes=settings.AUDITSVC_MAX_BODY_BYTES)
        parsed = parse_ingest_body(body, idempotency_header=request.headers.get("Idempotency-Key"))
        api_key = request.auth
        assert isinstance(api_key, ApiKey)  # HasScope admitted an API key
        result = ingest_events(source=api_key.source, items=parsed.events, is_batch=parsed.is_batch)
        code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        if not parsed.is_batch:
            return Response(event_output(result.events[0]), status=code)
        return Response(
            {
                "events": [event_output(event) for event in result.events],
                "created": result.created,
                "duplicates": result.duplicates,
            },
            status=code,
        )

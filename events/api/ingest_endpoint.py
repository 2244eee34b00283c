"""POST /api/v1/events: what it does once the caller is known to hold an ingest key.

One function for both ways a request arrives: through DRF (EventViewSet.create) and through
the accept path in front of Django (events.api.accept), so that the endpoint has one set of
rules. It takes a DRF or a plain Django request, and answers (body, status) for the caller to
render.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from rest_framework import status
from rest_framework.request import Request

from auditsvc import metrics
from auditsvc.api.request_body import content_type_of, read_json_body
from events.api.serializers import accepted_output, event_output
from events.ingest import cloudevents, stream
from events.ingest.group_commit import store_single_event
from events.ingest.validation import IngestRequest, parse_ingest_body, refuse_reserved
from events.ingest.write import ingest_events
from events.models import ApiKey


def post_events(request: HttpRequest | Request, api_key: ApiKey) -> tuple[dict[str, Any], int]:
    """Parse the body (native or one of the three CloudEvents modes), then store or queue it."""
    # Parsed by events.ingest.validation, not a DRF serializer: see that module for why.
    mode = cloudevents.mode_of(content_type_of(request), request.headers)
    if mode is not None:
        with cloudevents.error_names(mode):
            media_type = None if mode == cloudevents.BINARY else mode  # binary: the data's own type
            body = read_json_body(request, max_bytes=settings.AUDITSVC_MAX_BODY_BYTES, media_type=media_type)
            return store_parsed(api_key, cloudevents.parse_body(mode, body, request.headers))
    body = read_json_body(request, max_bytes=settings.AUDITSVC_MAX_BODY_BYTES)
    return store_parsed(api_key, parse_ingest_body(body, idempotency_header=request.headers.get("Idempotency-Key")))


def store_parsed(api_key: ApiKey, parsed: IngestRequest) -> tuple[dict[str, Any], int]:
    refuse_reserved(parsed)
    if not parsed.is_batch and stream.is_enabled():
        accepted = stream.accept_event(source=api_key.source, item=parsed.events[0])
        metrics.count_ingested(api_key.source.slug, "stream", int(accepted.created))
        return accepted_output(accepted), status.HTTP_202_ACCEPTED if accepted.created else status.HTTP_200_OK
    if not parsed.is_batch:
        stored = store_single_event(source=api_key.source, item=parsed.events[0])
        metrics.count_ingested(api_key.source.slug, "direct", int(stored.created))
        return event_output(stored), status.HTTP_201_CREATED if stored.created else status.HTTP_200_OK
    result = ingest_events(source=api_key.source, items=parsed.events, is_batch=True)
    metrics.count_ingested(api_key.source.slug, "direct", result.created)
    body = {
        "events": [event_output(event) for event in result.events],
        "created": result.created,
        "duplicates": result.duplicates,
    }
    return body, status.HTTP_201_CREATED if result.created else status.HTTP_200_OK

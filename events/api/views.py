"""Events API: ingest (POST), list, detail, export, and stats. Parse → call → format."""

from __future__ import annotations

import uuid
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings
from django.db.models import Max, QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from auditsvc.api.filtering import StrictFilterBackend, reject_unknown_params
from auditsvc.api.pagination import (
    MAX_PAGE,
    MAX_PAGE_SIZE,
    PAGINATION_PARAMS,
    Ordering,
    choose_ordering,
    each,
    paginate,
)
from auditsvc.api.permissions import HasScope
from auditsvc.api.request_body import read_json_body
from auditsvc.errors import FieldError, InvalidInput, ProblemError
from events import export, protection, schema_registry
from events.api import openapi, stats
from events.api.audited import AuditedReads, api_actor, record_api_read
from events.api.filters import DurationParamsFilterSet, EventFilterSet
from events.api.ingest_endpoint import post_events
from events.api.serializers import (
    AcceptedEventSerializer,
    CountSeriesSerializer,
    DurationStatsSerializer,
    ErrorSerializer,
    EventBatchOutputSerializer,
    EventOutputSerializer,
    EventSchemaSerializer,
    EventTypeSerializer,
    PublicKeySerializer,
    SourceSerializer,
    event_outputs,
)
from events.ingest import stream
from events.ingest.validation import load_json
from events.integrity import proofs, signing
from events.models import SCOPE_INGEST, SCOPE_READ, SCOPE_SCHEMA, ApiKey, Event, EventType, Seal, Source
from events.queries import (
    EVENT_FIELDS,
    PAYLOAD,
    EventRow,
    event_by_id,
    event_rows,
    event_type_ids,
    events_queryset,
    row_position,
)

_E = '"events_event"'
EVENT_ORDERINGS = {
    "-occurred_at": Ordering("-occurred_at", (f"{_E}.occurred_at", f"{_E}.id"), ("occurred_at", "id"), True),
    "occurred_at": Ordering("occurred_at", (f"{_E}.occurred_at", f"{_E}.id"), ("occurred_at", "id"), False),
    "-received_at": Ordering("-received_at", (f"{_E}.received_at", f"{_E}.id"), ("received_at", "id"), True),
    "received_at": Ordering("received_at", (f"{_E}.received_at", f"{_E}.id"), ("received_at", "id"), False),
    # By type name, then time: pair it with a type or time filter on large tables (it sorts).
    "type": Ordering(
        "type", ('"events_eventtype".name', f"{_E}.occurred_at", f"{_E}.id"), ("type__name", "occurred_at", "id"), False
    ),
    "-type": Ordering(
        "-type", ('"events_eventtype".name', f"{_E}.occurred_at", f"{_E}.id"), ("type__name", "occurred_at", "id"), True
    ),
}
ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid parameter or body; `errors[].field` names it."),
    401: OpenApiResponse(ErrorSerializer, description="Missing, unknown or revoked API key."),
    403: OpenApiResponse(ErrorSerializer, description="The key lacks the scope."),
    429: OpenApiResponse(ErrorSerializer, description="Rate limited (per key, or per address for unknown keys)."),
    503: OpenApiResponse(ErrorSerializer, description="The database is unreachable; retry after `Retry-After`."),
}
NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No such resource (`not_found`).")
PAGINATION_PARAMETERS = [
    OpenApiParameter("ordering", str, enum=list(EVENT_ORDERINGS), description="default -occurred_at"),
    OpenApiParameter("cursor", openapi.TEXT_PARAMETER, description="opaque; from `next`/`previous` (default mode)"),
    OpenApiParameter(
        "page",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
        description="page-number mode instead of cursors",
    ),
    OpenApiParameter(
        "page_size", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}, description="default 50"
    ),
]
PAYLOAD_PATH_NOTE = (
    "Besides the parameters below, `payload.<path>=<value>` filters on a nested payload key, "
    "e.g. `payload.invoice.currency=EUR` (repeatable); a field its schema marks sensitive is matched by the HMAC "
    "of the value given."
)
EVENT_PAGE = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description="Cursor mode: `{next, previous, results}`; page mode: `{metadata, results}`.",
    examples=[
        OpenApiExample(
            "cursor page",
            {"next": "https://audit.example/api/v1/events?cursor=eyJv...", "previous": None, "results": []},
        ),
        OpenApiExample(
            "page mode",
            {
                "metadata": {
                    "current_page": 2,
                    "page_size": 50,
                    "first_page": 1,
                    "last_page": 9,
                    "total_records": 431,
                    "total_is_estimate": False,
                },
                "results": [],
            },
        ),
    ],
)


def render_events(rows: list[EventRow]) -> list[dict[str, Any]]:
    """Events as every read returns them (list, detail, a customer's timeline): the one output
    rule, payloads readable, one key lookup for them all."""
    return protection.readable_outputs(event_outputs(rows), payload_texts=[row[PAYLOAD] for row in rows])


def own_source_only(request: Request) -> Source | None:
    """The source a `read:own` key is limited to; None for keys and sessions that read all."""
    key = request.auth
    if isinstance(key, ApiKey) and SCOPE_READ not in key.scopes:
        return key.source
    return None


def readable_events(request: Request, events: QuerySet[Event] | None = None) -> QuerySet[Event]:
    """The events (default: every one) the caller may read: all, or its own source's (`read:own`)."""
    events = events_queryset() if events is None else events
    source = own_source_only(request)
    return events if source is None else events.filter(source_id=source.pk)


def _event_or_404(event_id: str, request: Request) -> EventRow:
    event = event_by_id(event_id)
    source = own_source_only(request)
    # Another source's queued id is not_found to a read:own key, as it will be once stored.
    if event is None and stream.is_enabled() and _queued_for(event_id, source):
        message = "This event is accepted and waits in the stream to be stored; retry shortly."
        raise ProblemError([FieldError("id", "queued", message)], status=404)
    if event is None or (source is not None and event[EVENT_FIELDS.index("source")] != source.slug):
        raise ProblemError([FieldError("id", "not_found", "No event with this id.")], status=404)
    return event


def _queued_for(event_id: str, reader: Source | None) -> bool:
    """Whether event_id waits in the stream and is the reader's to know (None: reads all)."""
    try:
        queued = stream.queued_source(uuid.UUID(event_id))
    except ValueError:
        return False
    return queued is not None and (reader is None or queued == reader.pk)


def event_page(request: Request, events: QuerySet[Event]) -> Response:
    """A page of events: shared by /events and a customer's timeline."""
    ordering = choose_ordering(request, EVENT_ORDERINGS, "-occurred_at")
    return Response(
        paginate(request, event_rows(events), ordering=ordering, render=render_events, position_of=row_position)
    )


class EventViewSet(AuditedReads, viewsets.GenericViewSet):  # type: ignore[type-arg]
    """Events. POST stores one event or a batch (scope `ingest`); reads need scope `read`."""

    permission_classes = [HasScope]
    required_scopes = {
        "create": SCOPE_INGEST,
        "list": SCOPE_READ,
        "retrieve": SCOPE_READ,
        "export": SCOPE_READ,
        "proof": SCOPE_READ,
    }
    read_own_actions = ("list", "retrieve", "export", "proof")
    filter_backends = [StrictFilterBackend]
    filterset_class = EventFilterSet
    extra_query_params: tuple[str, ...] = ()  # per action, beyond the filters (export: format)
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> QuerySet[Event]:
        return readable_events(self.request)

    @extend_schema(
        request={
            "application/json": openapi.INGEST_BODY,
            "application/cloudevents+json": {"$ref": openapi.REF + "CloudEventInput"},
            "application/cloudevents-batch+json": openapi.CLOUDEVENTS_BATCH,
        },
        responses={
            201: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="EventOrBatchOutput",
                    serializers=[EventOutputSerializer, EventBatchOutputSerializer],
                    resource_type_field_name=None,
                ),
                description="Stored: the event, or for a batch {events, created, duplicates}.",
            ),
            202: OpenApiResponse(
                AcceptedEventSerializer,
                description="Stream mode (AUDITSVC_INGEST_MODE=stream), a single event: durably queued under "
                "this id; stored by the drainer (reads answer 404 `queued` until then).",
            ),
            200: OpenApiResponse(
                description="Every event was a retry of a stored one (same idempotency key); in stream mode, "
                "of an accepted one."
            ),
            409: OpenApiResponse(ErrorSerializer, description="Idempotency key reused with another body."),
            413: OpenApiResponse(ErrorSerializer, description="Body over the cap."),
            415: OpenApiResponse(
                ErrorSerializer, description="Not `application/json`, or an unknown Content-Encoding."
            ),
            **ERRORS,
            503: OpenApiResponse(
                ErrorSerializer,
                description="The database (`database_unavailable`), the commit (`commit_timeout`) or, in stream "
                "mode, Redis (`stream_unavailable`) or the database to check the type (`schema_unavailable`) did not "
                "answer; retry after `Retry-After` with the same key.",
            ),
        },
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                openapi.IDEMPOTENCY_HEADER,
                OpenApiParameter.HEADER,
                description="for a single event: the same as its `idempotency_key` field (give one, or equal ones)",
            )
        ],
    )
    def create(self, request: Request) -> Response:
        # Served by events.api.accept for API keys (Bearer); through DRF only otherwise, and
        # when the accept path is switched off. One rule for both: ingest_endpoint.
        api_key = request.auth
        assert isinstance(api_key, ApiKey)  # HasScope admitted an API key
        body, code = post_events(request, api_key)
        return Response(body, status=code)

    @extend_schema(
        parameters=PAGINATION_PARAMETERS, responses={200: EVENT_PAGE, **ERRORS}, description=PAYLOAD_PATH_NOTE
    )
    def list(self, request: Request) -> Response:
        return event_page(request, self.filter_queryset(self.get_queryset()))

    @extend_schema(
        responses={
            200: EventOutputSerializer,
            404: OpenApiResponse(
                ErrorSerializer,
                description="`not_found`; in stream mode `queued` while an accepted event waits to be stored.",
            ),
            **ERRORS,
        }
    )
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(render_events([_event_or_404(pk, request)])[0])

    @extend_schema(
        responses={200: OpenApiTypes.OBJECT, 404: ErrorSerializer, **ERRORS},
        description="The event, its Merkle inclusion proof, its seal (with signature) and the previous seal. "
        "Check it offline with `python -m events.integrity.verify_proof proof.json`. 404 `not_sealed` until sealed.",
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def proof(self, request: Request, pk: str) -> Response:
        event = event_outputs([_event_or_404(pk, request)])[0]  # as stored: what the proof's hash covers
        proof = proofs.inclusion_proof_for(uuid.UUID(event["id"]))
        if proof is None:
            raise ProblemError(
                [FieldError("id", "not_sealed", "This event is not sealed yet; retry later.")], status=404
            )
        return Response({"event": event, "proof": proof})

    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=[*export.FORMATS], description="default ndjson")],
        responses={(200, "application/x-ndjson"): OpenApiTypes.STR, (200, "text/csv"): OpenApiTypes.STR, **ERRORS},
        description="Every matching event, streamed (gzip when accepted). Same filters as the list. "
        "`format=cloudevents`: one CloudEvents 1.0 JSON document per line, which `import_events --format "
        "cloudevents` reads back.",
    )
    @action(detail=False, methods=["get"], extra_query_params=("format",))
    def export(self, request: Request) -> StreamingHttpResponse:
        export_format = request.query_params.get("format", "ndjson")
        if export_format not in export.FORMATS:
            raise InvalidInput([FieldError("format", "invalid_choice", "format is ndjson, csv or cloudevents.")])
        events = self.filter_queryset(self.get_queryset()).order_by("-occurred_at", "-id")
        chunks = export.stream_events(
            events,
            export_format=export_format,
            on_finish=lambda rows: record_api_read(request, returned=rows, of="events", details={}),
        )
        content_type = "text/csv; charset=utf-8" if export_format == "csv" else "application/x-ndjson"
        gzip = "gzip" in request.headers.get("Accept-Encoding", "")
        response = StreamingHttpResponse(export.gzip_stream(chunks) if gzip else chunks, content_type=content_type)
        if gzip:
            response["Content-Encoding"] = "gzip"
        response["Vary"] = "Accept-Encoding"
        extension = {"ndjson": "ndjson", "csv": "csv", "cloudevents": "cloudevents.ndjson"}[export_format]
        response["Content-Disposition"] = f'attachment; filename="events.{extension}"'
        return response


@extend_schema_view(
    list=extend_schema(responses={200: EventTypeSerializer(many=True), **ERRORS}),
    retrieve=extend_schema(responses={200: EventTypeSerializer, 404: NOT_FOUND, **ERRORS}),
)
class EventTypeViewSet(viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    """Event types with their description, first/last seen, event count, and payload schemas."""

    permission_classes = [HasScope]
    required_scope = SCOPE_READ
    required_scopes = {"register_schema": SCOPE_SCHEMA}
    queryset = (
        EventType.objects.select_related("owner").annotate(latest_schema=Max("schemas__version")).order_by("name")
    )
    serializer_class = EventTypeSerializer
    lookup_field = "name"
    lookup_value_regex = "[^/]+"
    pagination_class = None  # bounded: one row per type, a few hundred at most

    @extend_schema(
        request={"application/json": openapi.SCHEMA_REGISTRATION_INPUT},
        parameters=[
            OpenApiParameter("name", openapi.EVENT_TYPE_NAME, OpenApiParameter.PATH),
            OpenApiParameter("force", bool, description="staff only: register despite incompatibilities"),
        ],
        responses={
            200: EventSchemaSerializer,
            201: EventSchemaSerializer,
            409: ErrorSerializer,
            413: OpenApiResponse(ErrorSerializer, description="Body over the cap."),
            415: OpenApiResponse(ErrorSerializer, description="Not `application/json`."),
            **ERRORS,
        },
        description='Register a new version of the type\'s payload schema: `{"schema": <JSON Schema 2020-12>, '
        '"validation": "off"|"warn"|"enforce"}` (validation optional). It must be backward compatible with every '
        "earlier version and accept the type's latest stored events, else 409 `incompatible_schema` with the "
        "reasons. The same schema again answers 200 with its version. Needs the `schema` scope of the source "
        "that owns the type (the first to send it or register a schema for it, or one staff named; else 403 "
        "`not_type_owner`), or a staff session with the change permission on event types, for any type; "
        "`?force=true` is for staff.",
    )
    @action(detail=True, methods=["put"], filter_backends=[], url_path="schema")
    def register_schema(self, request: Request, name: str) -> Response:
        reject_unknown_params(request, {"force"})
        force = {"true": True, "false": False}.get(request.query_params.get("force", "false"))
        if force is None:
            raise InvalidInput([FieldError("force", "invalid_choice", "force is true or false.")])
        # The ingest body's JSON rules: malformed, repeated keys, huge integers, deep nesting.
        body = load_json(read_json_body(request, max_bytes=settings.AUDITSVC_MAX_BODY_BYTES) or b"null")
        if not isinstance(body, dict) or "schema" not in body:
            raise InvalidInput([FieldError("schema", "required", 'Send {"schema": {...}}.')])
        unknown = sorted(set(body) - {"schema", "validation"})
        if unknown:
            raise InvalidInput([FieldError(field, "unknown_field", "Not a field of this body.") for field in unknown])
        if force and request.auth is not None:
            raise ProblemError([FieldError("force", "permission_denied", "Only staff may force a schema.")], status=403)
        registered, created = schema_registry.register_schema(
            type_name=name, schema=body["schema"], actor=api_actor(request), force=force,
            validation=body.get("validation"), source=request.auth.source if isinstance(request.auth, ApiKey) else None,
        )  # fmt: skip
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(EventSchemaSerializer(registered).data, status=code)

    @extend_schema(responses={200: EventSchemaSerializer(many=True), 404: NOT_FOUND, **ERRORS})
    @action(detail=True, methods=["get"], filter_backends=[], url_path="schemas")
    def schema_versions(self, request: Request, name: str) -> Response:
        """Every version of the type's payload schema, oldest first."""
        event_type = self.get_object()
        return Response(EventSchemaSerializer(event_type.schemas.order_by("version"), many=True).data)

    @extend_schema(responses={200: EventSchemaSerializer, 404: NOT_FOUND, **ERRORS})
    @action(detail=True, methods=["get"], filter_backends=[], url_path=r"schemas/(?P<version>[0-9]{1,9})")
    def schema_version(self, request: Request, name: str, version: str) -> Response:
        """One version: the URI a CloudEvent's `dataschema` names to be checked against it."""
        found = self.get_object().schemas.filter(version=int(version)).first()
        if found is None:
            raise ProblemError([FieldError("version", "not_found", "The type has no such version.")], status=404)
        return Response(EventSchemaSerializer(found).data)


@extend_schema_view(
    list=extend_schema(responses={200: SourceSerializer(many=True), **ERRORS}),
    retrieve=extend_schema(responses={200: SourceSerializer, 404: NOT_FOUND, **ERRORS}),
)
class SourceViewSet(viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    """The services that send events."""

    permission_classes = [HasScope]
    required_scope = SCOPE_READ
    read_own_actions = ("list", "retrieve")
    serializer_class = SourceSerializer
    lookup_field = "slug"
    pagination_class = None  # bounded: one row per service

    def get_queryset(self) -> QuerySet[Source]:
        source = own_source_only(self.request)
        sources = Source.objects.order_by("slug")
        return sources if source is None else sources.filter(pk=source.pk)


class StatsViewSet(AuditedReads, viewsets.GenericViewSet):  # type: ignore[type-arg]
    """Aggregates computed by PostgreSQL."""

    audit_read_of = "aggregates"

    permission_classes = [HasScope]
    required_scope = SCOPE_READ
    filter_backends = [StrictFilterBackend]
    filterset_class = EventFilterSet
    extra_query_params: tuple[str, ...] = ()
    read_own_actions = ("counts", "durations")

    def get_queryset(self) -> QuerySet[Event]:
        return readable_events(self.request, Event.objects.all())  # no joins: aggregates only

    @extend_schema(
        parameters=[
            OpenApiParameter("interval", str, enum=[*stats.INTERVALS], description="default day"),
            OpenApiParameter("group_by", str, enum=[*stats.GROUPS], description="default none"),
        ],
        responses={200: CountSeriesSerializer, **ERRORS},
        description="Counts per time bucket over occurred_after..occurred_before (default: the last "
        "168 hours / 90 days / 104 weeks; at most 2,000 buckets). Takes every event filter.",
    )
    @action(detail=False, methods=["get"], extra_query_params=("interval", "group_by"))
    def counts(self, request: Request) -> Response:
        filterset = StrictFilterBackend().valid_filterset(request, self.get_queryset(), self)
        series = stats.count_series(
            events=filterset.qs,
            interval=request.query_params.get("interval", "day"),
            group_by=request.query_params.get("group_by", "none"),
            occurred_after=filterset.form.cleaned_data.get("occurred_after"),
            occurred_before=filterset.form.cleaned_data.get("occurred_before"),
        )
        return Response(series)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "from_type", openapi.REQUIRED_TEXT_PARAMETER, required=True, description="customer.created"
            ),
            OpenApiParameter("to_type", openapi.REQUIRED_TEXT_PARAMETER, required=True, description="customer.left"),
            OpenApiParameter("occurred_after", openapi.TIME_PARAMETER, description="bounds the first from_type"),
            OpenApiParameter("occurred_before", openapi.TIME_PARAMETER),
        ],
        responses={200: DurationStatsSerializer, **ERRORS},
        filters=False,
    )
    @action(detail=False, methods=["get"], filterset_class=DurationParamsFilterSet)
    def durations(self, request: Request) -> Response:
        params = StrictFilterBackend().valid_filterset(request, self.get_queryset(), self).form.cleaned_data
        result = stats.duration_stats(
            from_type_ids=event_type_ids(names=[params["from_type"]]),
            to_type_ids=event_type_ids(names=[params["to_type"]]),
            occurred_after=params.get("occurred_after"),
            occurred_before=params.get("occurred_before"),
            source=own_source_only(request),
        )
        return Response(DurationStatsSerializer(result).data)


SEAL_ORDERINGS = {"-sequence": Ordering("-sequence", ('"events_seal".sequence',), ("sequence",), True)}


class IntegrityViewSet(viewsets.GenericViewSet):  # type: ignore[type-arg]
    """Seals and the public key that signs them (docs/integrity.md)."""

    permission_classes = [HasScope]
    required_scope = SCOPE_READ
    read_own_actions = ("seals", "public_key")  # hashes and counts, no event's content

    @extend_schema(responses={200: OpenApiTypes.OBJECT, **ERRORS}, description="Newest first, cursor-paginated.")
    @action(detail=False, methods=["get"])
    def seals(self, request: Request) -> Response:
        reject_unknown_params(request, set(PAGINATION_PARAMS))
        ordering = choose_ordering(request, SEAL_ORDERINGS, "-sequence")
        return Response(paginate(request, Seal.objects.all(), ordering=ordering, render=each(proofs.seal_output)))

    @extend_schema(
        responses={200: PublicKeySerializer, 404: ErrorSerializer, **ERRORS},
        description="The key that signs new seals, and every key trusted for older seals (rotation).",
    )
    @action(detail=False, methods=["get"], url_path="public-key")
    def public_key(self, request: Request) -> Response:
        reject_unknown_params(request, set())
        keys = signing.trusted_public_keys()
        if not keys:
            message = "No signing or public key is configured (AUDIT_SIGNING_KEY, AUDIT_PUBLIC_KEYS)."
            raise ProblemError([FieldError(None, "not_configured", message)], status=404)
        private = signing.signing_key()
        current = private.public_key() if private else next(iter(keys.values()))
        return Response({**_key_output(current), "keys": [_key_output(key) for key in keys.values()]})


def _key_output(key: Ed25519PublicKey) -> dict[str, str]:
    return {
        "algorithm": "Ed25519",
        "key_id": signing.key_id(key),
        "public_key_hex": signing.public_key_bytes(key).hex(),
        "public_key_pem": signing.public_key_pem(key),
    }

"""Output shapes of the events API. Ingest input is validated by events.ingest.validation (and
described for OpenAPI in events.api.openapi); these serializers document the output in the
schema, and render the small listings."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import orjson
from rest_framework import serializers

from events.ingest.stream import Accepted
from events.integrity.hashing import format_time
from events.models import EventSchema, EventType, Source
from events.queries import EVENT_FIELDS, PAYLOAD, EventRow, StoredEvent

# 19 digits or more: a number that may lie beyond 64 bits, which orjson.loads reads as a float
# where json.loads (the ORM's) kept an int. Such a payload is read as before (json.loads), so
# that what the renderer writes for it (big_ints_as_floats) stays what it was; a string of
# digits that long only costs the slower decoder.
_LONG_NUMBER = re.compile(r"[0-9]{19}")


def event_output(event: StoredEvent) -> dict[str, Any]:
    """An event as the API returns it (as event_outputs, from a value the write path holds)."""
    values = (
        str(event.id), event.type, event.source, event.customer, event.actor, format_time(event.occurred_at),
        format_time(event.received_at), event.description, event.payload, event.idempotency_key, event.hash,
        event.origin,
    )  # fmt: skip
    return dict(zip(EVENT_FIELDS, values, strict=True))


def event_outputs(rows: Sequence[EventRow]) -> list[dict[str, Any]]:
    """Events as the API returns them, in their stored form, from rows as PostgreSQL formatted
    them (events.queries.event_rows): times in the RFC 3339 form the hash uses, the payload
    parsed from its JSON text."""
    outputs = []
    for row in rows:
        output = dict(zip(EVENT_FIELDS, row, strict=True))
        text = row[PAYLOAD]
        output["payload"] = json.loads(text) if _LONG_NUMBER.search(text) else orjson.loads(text)
        outputs.append(output)
    return outputs


def accepted_output(accepted: Accepted) -> dict[str, Any]:
    """Stream mode's answer: the id the event will be stored under, and the lag before it is."""
    return {
        "id": str(accepted.event_id),
        "status": "queued",
        "received_at": format_time(accepted.received_at) if accepted.received_at else None,
        "hash": accepted.hash,
        "lag": accepted.lag.as_dict() if accepted.lag else None,
    }


class EventOutputSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """Documents event_output() for the schema (rendering itself skips DRF for speed)."""

    id = serializers.UUIDField(help_text="UUIDv7 assigned on receipt")
    type = serializers.CharField()
    source = serializers.CharField(help_text="slug of the sending service")  # type: ignore[assignment]
    customer = serializers.CharField(allow_null=True, help_text="the customer's external id")
    actor = serializers.CharField(allow_null=True)
    occurred_at = serializers.DateTimeField()
    received_at = serializers.DateTimeField()
    description = serializers.CharField(allow_null=True)
    payload = serializers.JSONField()
    idempotency_key = serializers.CharField(allow_null=True)
    hash = serializers.CharField(help_text="SHA-256 (hex) of the RFC 8785 envelope; see docs/integrity.md")


class EventBatchOutputSerializer(serializers.Serializer):  # type: ignore[type-arg]
    events = EventOutputSerializer(many=True)
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField()


class StreamLagSerializer(serializers.Serializer):  # type: ignore[type-arg]
    entries = serializers.IntegerField(help_text="events accepted and not yet stored, in this event's shard")
    oldest_seconds = serializers.FloatField(help_text="age of the oldest of them")


class AcceptedEventSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """Documents accepted_output(): stream mode's answer to a single event."""

    id = serializers.UUIDField(help_text="the id the event is stored under")
    status = serializers.ChoiceField(choices=["queued"])
    received_at = serializers.CharField(allow_null=True, help_text="null for a retry of an accepted event")
    hash = serializers.CharField(allow_null=True, help_text="the event's SHA-256; null for a retry")
    lag = StreamLagSerializer(allow_null=True)


class EventTypeSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    schema_version = serializers.SerializerMethodField(help_text="The latest schema version; null: none.")
    owner: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True,
        help_text="The source whose schema keys register the type's schemas; null: none yet.",
    )  # fmt: skip

    class Meta:
        model = EventType
        fields = ["name", "description", "first_seen_at", "last_seen_at", "event_count", "validation",
                  "schema_version", "schema_violations", "owner"]  # fmt: skip

    def get_schema_version(self, event_type: EventType) -> int | None:
        return getattr(event_type, "latest_schema", None)  # annotated by the view


class EventSchemaSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    type = serializers.CharField(source="type.name")
    dataschema = serializers.SerializerMethodField(help_text="what a CloudEvent's dataschema names to use it")

    class Meta:
        model = EventSchema
        fields = ["type", "version", "schema", "registered_at", "registered_by", "forced", "dataschema"]

    def get_dataschema(self, schema: EventSchema) -> str:
        return f"/api/v1/event-types/{schema.type.name}/schemas/{schema.version}"


class SourceSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = Source
        fields = ["slug", "name", "is_active", "created_at"]


class CountSeriesSerializer(serializers.Serializer):  # type: ignore[type-arg]
    interval = serializers.ChoiceField(choices=["hour", "day", "week"])
    group_by = serializers.ChoiceField(choices=["none", "type", "source"])
    series = serializers.ListField(child=serializers.DictField(), help_text="[{time, type|source?, count}]")


class DurationStatsSerializer(serializers.Serializer):  # type: ignore[type-arg]
    count = serializers.IntegerField(help_text="customers with both events")
    median_seconds = serializers.FloatField(allow_null=True)
    p90_seconds = serializers.FloatField(allow_null=True)
    max_seconds = serializers.FloatField(allow_null=True)


class ErrorItemSerializer(serializers.Serializer):  # type: ignore[type-arg]
    field = serializers.CharField(allow_null=True, help_text='path into the request, e.g. "events[3].occurred_at"')
    code = serializers.CharField(help_text="stable machine-readable code")
    message = serializers.CharField()


class ErrorSerializer(serializers.Serializer):  # type: ignore[type-arg]
    errors = ErrorItemSerializer(many=True)  # type: ignore[assignment]


class PublicKeyItemSerializer(serializers.Serializer):  # type: ignore[type-arg]
    algorithm = serializers.CharField()
    key_id = serializers.CharField()
    public_key_hex = serializers.CharField()
    public_key_pem = serializers.CharField()


class PublicKeySerializer(PublicKeyItemSerializer):
    """The current signing key's fields, and every trusted key (current and rotated out)."""

    keys = PublicKeyItemSerializer(many=True)

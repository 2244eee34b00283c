"""EventFilterSet: every filter of GET /api/v1/events, the timeline, export and stats."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import django_filters
import orjson
from django import forms
from django.contrib.postgres.search import SearchQuery, SearchVector
from django.db.models import Q, QuerySet
from django.http import QueryDict
from drf_spectacular.utils import extend_schema_field

from auditsvc.errors import FieldError, InvalidInput
from auditsvc.times import parse_rfc3339_bound
from customers.queries import customer_ids_for
from events import protection
from events.api import openapi
from events.ingest.validation import FLOAT_LIMIT, json_object_errors
from events.models import Event
from events.queries import event_type_ids, source_ids, within_partitions

PAYLOAD_PATH_PREFIX = "payload."
MAX_FILTER_VALUES = 100


class MultipleCharField(forms.Field):
    """A repeatable text parameter (?type=a&type=b) → a list of strings."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value: Any) -> list[str]:
        values = [str(v) for v in value or [] if str(v) != ""]
        if len(values) > MAX_FILTER_VALUES:
            raise forms.ValidationError(f"At most {MAX_FILTER_VALUES} values.", code="too_many_values")
        if any("\x00" in v for v in values):
            raise forms.ValidationError("NUL characters are not allowed.", code="null_character")
        return values


@extend_schema_field({"type": "array", "items": openapi.TEXT_PARAMETER})
class MultipleCharFilter(django_filters.Filter):
    field_class = MultipleCharField


class StrictCharField(forms.CharField):
    def to_python(self, value: Any) -> str:
        text = super().to_python(value) or ""
        if "\x00" in text:
            raise forms.ValidationError("NUL characters are not allowed.", code="null_character")
        return text


@extend_schema_field(openapi.TEXT_PARAMETER)
class StrictCharFilter(django_filters.CharFilter):
    field_class = StrictCharField


class Rfc3339DateTimeField(forms.Field):
    """A time in the one accepted form (auditsvc.times): an RFC 3339 time with an offset, any
    year 0000-9999 (clamped to Python's calendar). An empty value is an error like any other
    malformed time, not an absent filter."""

    def to_python(self, value: Any) -> datetime | None:
        if value is None:
            return None
        try:
            return parse_rfc3339_bound(str(value))
        except ValueError:
            raise forms.ValidationError(
                "Must be an RFC 3339 time with an offset, e.g. 2026-11-24T09:30:00Z.", code="invalid_datetime"
            ) from None


@extend_schema_field(openapi.TIME_PARAMETER)
class Rfc3339DateTimeFilter(django_filters.Filter):
    field_class = Rfc3339DateTimeField


class EventFilterSet(django_filters.FilterSet):
    dynamic_prefixes = (PAYLOAD_PATH_PREFIX,)  # payload.<dotted.path>=<value>, see filter_queryset
    type = MultipleCharFilter(method="filter_type", help_text="Exact type name; repeat for several.")
    type_prefix = StrictCharFilter(method="filter_type_prefix", help_text="Types starting with this, e.g. `billing.`")
    source = MultipleCharFilter(method="filter_source", help_text="Source slug; repeat for several.")
    customer = StrictCharFilter(
        method="filter_customer", help_text="Customer external id, or an identity as `system:id`."
    )
    actor = StrictCharFilter(field_name="actor", lookup_expr="exact")
    occurred_after = Rfc3339DateTimeFilter(field_name="occurred_at", lookup_expr="gte", help_text="Inclusive.")
    occurred_before = Rfc3339DateTimeFilter(field_name="occurred_at", lookup_expr="lt", help_text="Exclusive.")
    received_after = Rfc3339DateTimeFilter(field_name="received_at", lookup_expr="gte", help_text="Inclusive.")
    received_before = Rfc3339DateTimeFilter(field_name="received_at", lookup_expr="lt", help_text="Exclusive.")
    q = StrictCharFilter(method="filter_text", help_text="Words of the description (full-text, all must match).")
    payload = StrictCharFilter(
        method="filter_payload", help_text='JSON containment, e.g. `{"plan":"pro"}`. See also payload.<path>=<value>.'
    )

    class Meta:
        model = Event
        fields: list[str] = []

    def filter_type(self, queryset: QuerySet[Event], name: str, value: list[str]) -> QuerySet[Event]:
        return queryset.filter(type_id__in=event_type_ids(names=value)) if value else queryset

    def filter_source(self, queryset: QuerySet[Event], name: str, value: list[str]) -> QuerySet[Event]:
        return queryset.filter(source_id__in=source_ids(value)) if value else queryset

    def filter_type_prefix(self, queryset: QuerySet[Event], name: str, value: str) -> QuerySet[Event]:
        return queryset.filter(type_id__in=event_type_ids(prefix=value))

    def filter_customer(self, queryset: QuerySet[Event], name: str, value: str) -> QuerySet[Event]:
        return queryset.filter(customer_id__in=customer_ids_for(value))

    def filter_text(self, queryset: QuerySet[Event], name: str, value: str) -> QuerySet[Event]:
        # The same expression as the event_description_fts index, so that index serves it.
        vector = SearchVector("description", config="simple")
        return queryset.annotate(description_search=vector).filter(
            description_search=SearchQuery(value, config="simple", search_type="websearch")
        )

    def filter_payload(self, queryset: QuerySet[Event], name: str, value: str) -> QuerySet[Event]:
        try:
            document = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise InvalidInput([FieldError("payload", "malformed_json", "payload must be a JSON object.")]) from None
        if not isinstance(document, dict):
            raise InvalidInput([FieldError("payload", "wrong_type", "payload must be a JSON object.")])
        errors = json_object_errors(document, "payload")  # a stored payload's rules: nothing else can match
        if errors:
            raise InvalidInput(errors)
        return queryset.filter(payload__contains=document)

    def filter_queryset(self, queryset: QuerySet[Event]) -> QuerySet[Event]:
        queryset = super().filter_queryset(queryset)
        times = self.form.cleaned_data
        queryset = within_partitions(
            queryset,
            occurred_after=times.get("occurred_after"),
            received_after=times.get("received_after"),
            received_before=times.get("received_before"),
        )
        if isinstance(self.data, QueryDict):
            for key in self.data:
                if key.startswith(PAYLOAD_PATH_PREFIX):
                    queryset = queryset.filter(payload_path_condition(key, self.data.getlist(key)))
        return queryset


def payload_path_condition(key: str, values: list[str]) -> Q:
    """payload.a.b=v → payload @> {"a": {"b": v}} (GIN-served), v as a string or a JSON scalar."""
    path = key[len(PAYLOAD_PATH_PREFIX) :].split(".")
    if not all(path) or len(path) > 32 or len(values) != 1 or "\x00" in values[0] or "\x00" in key:
        raise InvalidInput([FieldError(key, "invalid_payload_path", "Use payload.<key>[.<key>...]=<value>, once.")])
    value = values[0]
    candidates: list[Any] = [value]
    try:
        scalar = orjson.loads(value)
    except orjson.JSONDecodeError:
        scalar = None
    else:
        # 5, true, null also match the JSON number/boolean/null; a number no payload can hold
        # (1e300, beyond ±2^63) matches only as the text it is.
        in_range = not isinstance(scalar, float) or -FLOAT_LIMIT < scalar < FLOAT_LIMIT
        if not isinstance(scalar, dict | list | str) and in_range:
            candidates.append(scalar)
    # A sensitive field holds only the HMAC of its value (events.protection): hash what is asked for.
    candidates += [protection.sensitive_digest(candidate) for candidate in candidates]
    condition = Q()
    for candidate in candidates:
        document: Any = candidate
        for part in reversed(path):
            document = {part: document}
        condition |= Q(payload__contains=document)
    return condition


class DurationParamsFilterSet(django_filters.FilterSet):
    """The parameters of stats/durations, validated like every filter (required, NUL, ISO 8601,
    unknown names); they select events in events.api.stats.duration_stats, not here."""

    from_type = StrictCharFilter(method="parameter_only", required=True, help_text="e.g. customer.created")
    to_type = StrictCharFilter(method="parameter_only", required=True, help_text="e.g. customer.deactivated")
    occurred_after = Rfc3339DateTimeFilter(method="parameter_only", help_text="bounds the first from_type")
    occurred_before = Rfc3339DateTimeFilter(method="parameter_only")

    class Meta:
        model = Event
        fields: list[str] = []

    def parameter_only(self, queryset: QuerySet[Event], name: str, value: Any) -> QuerySet[Event]:
        return queryset

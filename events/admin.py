"""The staff audit UI: read-only events, types and sources, API keys for superusers only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import redis
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Max, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.text import Truncator
from rangefilter.filters import DateTimeRangeFilterBuilder  # type: ignore[import-untyped]

from auditsvc.admin_input import CheckedInputAdmin
from auditsvc.counting import EstimatedCountPaginator
from auditsvc.errors import Unavailable
from events import privacy_generation, protection
from events.admin_audit import AuditedChanges, AuditedReads
from events.ingest import stream
from events.ingest.validation import SERVICE_TYPE_PREFIX, event_type_name_errors
from events.integrity.hashing import format_time
from events.json_html import json_html
from events.keys import create_api_key, revoke_api_key
from events.models import SCOPES, SERVICE_SOURCE, ApiKey, Event, EventSchema, EventType, Seal, Source
from events.queries import occurred_id_floor, seal_position, search_events

admin.site.site_header = "auditsvc"
admin.site.site_title = "auditsvc"
admin.site.index_title = "Audit log"


class ReadOnlyAdmin(CheckedInputAdmin):
    """Viewable with the view permission; nobody, superusers included, adds, changes or deletes."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class CustomerPresenceFilter(admin.SimpleListFilter):
    title = "customer"
    parameter_name = "has_customer"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "With a customer"), ("no", "Without a customer")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in ("yes", "no"):
            return queryset.filter(customer__isnull=self.value() == "no")
        return queryset


class OwnEventsFilter(admin.SimpleListFilter):
    """The log's own events (reads of it, admin changes, retention runs) are hidden unless asked
    for: every page shown adds one, and they would bury what the services sent."""

    title = "the log's own events"
    parameter_name = "own"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("show", "Shown too"), ("only", "Only these")]

    def choices(self, changelist: Any) -> Any:
        for choice in super().choices(changelist):
            if choice["display"] == "All":
                choice["display"] = "Hidden"
            yield choice

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        own = Source.objects.filter(slug=SERVICE_SOURCE).values_list("pk", flat=True).first()
        if own is None or self.value() == "show" or request.GET.get("source__id__exact") == str(own):
            return queryset
        if self.value() == "only":
            return queryset.filter(source_id=own)
        return queryset.exclude(source_id=own)


def short_time(instant: datetime) -> str:
    """ "14:07:08" today, "Nov 30, 14:07" this year, "2025-11-03 14:07" before; full ISO on hover."""
    local, today = timezone.localtime(instant), timezone.localdate()
    if local.date() == today:
        text = local.strftime("%H:%M:%S")
    elif local.year == today.year:
        text = f"{local:%b} {local.day}, {local:%H:%M}"
    else:
        text = local.strftime("%Y-%m-%d %H:%M")
    full = format_time(instant)
    return format_html('<time datetime="{}" title="{}">{}</time>', full, full, text)


class OccurredRangeFilter(DateTimeRangeFilterBuilder(title="occurred")):  # type: ignore[misc]
    """The occurred range, with the id bound it implies: older partitions are not read."""

    def _make_query_filter(self, request: HttpRequest, validated_data: dict[str, Any]) -> dict[str, Any]:
        query: dict[str, Any] = super()._make_query_filter(request, validated_data)
        if "occurred_at__gte" in query:
            query["id__gte"] = occurred_id_floor(query["occurred_at__gte"])
        return query


class RequeueForm(forms.Form):
    """The stream page's requeue button: a shard of this deployment and a dead letter's stream id."""

    shard = forms.IntegerField(min_value=0)
    letter = forms.RegexField(r"\A[0-9]{1,20}-[0-9]{1,20}\Z", max_length=41)

    def clean_shard(self) -> int:
        shard: int = self.cleaned_data["shard"]
        if shard >= stream.shard_count():
            raise forms.ValidationError(f"This deployment has {stream.shard_count()} shard(s), from 0.")
        return shard


@admin.register(Event)
class EventAdmin(AuditedReads, ReadOnlyAdmin):
    list_display = ["occurred_short", "type_link", "source", "customer_link", "actor", "short_description"]
    list_filter = [
        "type",
        "source",
        ("occurred_at", OccurredRangeFilter),
        CustomerPresenceFilter,
        ("schema_valid", admin.BooleanFieldListFilter),
        OwnEventsFilter,
    ]
    # The search box; get_search_results sends each term to an index (events.queries.search_events).
    search_fields = ["id"]
    search_help_text = "An event id, a customer (external id or system:id), an actor, or words of the description."
    list_select_related = ["type", "source", "customer"]
    ordering = ["-occurred_at", "-id"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False  # no COUNT(*) over the whole table
    list_per_page = 50
    actions = None
    fieldsets = [
        (None, {"fields": ["id", "type_link", "source", "origin", "customer_link", "actor", "description"]}),
        ("Time", {"fields": ["occurred", "received"]}),
        ("Payload", {"fields": ["payload_view"]}),
        ("Integrity", {"fields": ["hash", "seal_status", "idempotency_key", "schema_check"]}),
    ]
    readonly_fields = ["id", "type_link", "source", "origin", "customer_link", "actor", "description",
                       "occurred", "received", "payload_view", "hash", "seal_status", "idempotency_key",
                       "schema_check"]  # fmt: skip

    class Media:
        css = {"all": ["events/admin.css"]}

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Event], search_term: str
    ) -> tuple[QuerySet[Event], bool]:
        return search_events(queryset, search_term), False

    def get_urls(self) -> list[URLPattern]:
        stream_page = path("stream/", self.admin_site.admin_view(self.stream_view), name="events_event_stream")
        return [stream_page, *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if stream.is_enabled():
            extra_context = {**(extra_context or {}), "stream": stream.overview()}
        return super().changelist_view(request, extra_context)

    def audit_object_read(self, obj: Event, context: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
        details = {"event": str(obj.pk)}
        if obj.customer is not None:
            details["customer"] = obj.customer.external_id
        return 1, "events", details

    def stream_view(self, request: HttpRequest) -> HttpResponse:
        """Stream mode: each shard's lag, and the dead letters (superusers may requeue one)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            if not request.user.is_superuser:
                raise PermissionDenied
            self._requeue(request, RequeueForm(request.POST))
            return HttpResponseRedirect(reverse("admin:events_event_stream"))
        overview = stream.overview()
        readable = overview["enabled"] and "error" not in overview
        context = {
            **self.admin_site.each_context(request),
            "title": "Ingest stream",
            "opts": self.model._meta,
            "stream": overview,
            "letters": stream.dead_letters() if readable else [],
            "can_requeue": request.user.is_superuser,
        }
        return TemplateResponse(request, "admin/events/stream.html", context)

    def _requeue(self, request: HttpRequest, form: RequeueForm) -> None:
        if not stream.is_enabled() or not form.is_valid():
            errors = "; ".join(f"{name}: {' '.join(map(str, problems))}" for name, problems in form.errors.items())
            messages.error(request, f"Not requeued: {errors or 'the service runs in direct mode, without a stream'}.")
            return
        letter = form.cleaned_data["letter"]
        try:
            requeued = stream.requeue_dead_letter(form.cleaned_data["shard"], letter)
        except redis.RedisError as exc:
            messages.error(request, f"Not requeued: {exc}")
            return
        if requeued:
            messages.success(request, f"Dead letter {letter} is back in the stream; the drainer stores it next.")
        else:
            messages.warning(request, f"Dead letter {letter} is no longer there.")

    @admin.display(description="occurred", ordering="occurred_at")
    def occurred(self, event: Event) -> str:
        return format_time(event.occurred_at)

    @admin.display(description="occurred", ordering="occurred_at")
    def occurred_short(self, event: Event) -> str:
        """As people read times, in the deployment's time zone (TIME_ZONE); the full time on hover."""
        return short_time(event.occurred_at)

    @admin.display(description="received")
    def received(self, event: Event) -> str:
        return format_time(event.received_at)

    @admin.display(description="type")
    def type_link(self, event: Event) -> str:
        url = reverse("admin:events_event_changelist") + f"?type__id__exact={event.type_id}"
        return format_html('<a href="{}" title="Other {} events">{}</a>', url, event.type.name, event.type.name)

    @admin.display(description="customer")
    def customer_link(self, event: Event) -> str:
        if event.customer is None:
            return "—"
        url = reverse("admin:customers_customer_change", args=[event.customer_id])
        return format_html('<a href="{}" title="Timeline">{}</a>', url, event.customer.external_id)

    @admin.display(description="description")
    def short_description(self, event: Event) -> str:
        return Truncator(event.description or "").chars(80)

    @admin.display(description="payload")
    def payload_view(self, event: Event) -> str:
        customer = event.customer.external_id if event.customer else ""
        place = protection.Place(str(event.id), event.source.slug, event.type.name, customer)
        readable = protection.readable_payloads([(event.payload, place)])[0]
        if readable is event.payload:
            return format_html('<div class="json-view">{}</div>', json_html(event.payload))
        return format_html(
            '<div class="json-view">{}</div><p class="help">Personal fields decrypted for you. The log stores '
            "them encrypted, and that is what the hash covers:</p><div class=\"json-view\">{}</div>",
            json_html(readable), json_html(event.payload),
        )  # fmt: skip

    @admin.display(description="schema")
    def schema_check(self, event: Event) -> str:
        if event.schema_version is None:
            return "not checked (no schema, or validation off, when it was stored)"
        if event.schema_valid:
            return f"valid against v{event.schema_version}"
        return format_html('<span class="health-bad">violates v{}</span> (stored in warn mode)', event.schema_version)

    @admin.display(description="seal")
    def seal_status(self, event: Event) -> str:
        position = seal_position(event.id)
        if position is None:
            return format_html('<span class="seal-pending">{}</span>', "not yet sealed")
        url = reverse("admin:events_seal_change", args=[position[0]])
        return format_html(
            '<span class="seal-ok">sealed</span> in <a href="{}">seal {}</a>, leaf {}', url, position[0], position[1]
        )


class SchemaPresenceFilter(admin.SimpleListFilter):
    title = "schema"
    parameter_name = "has_schema"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "With a schema"), ("no", "Seen without a schema")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in ("yes", "no"):
            return queryset.filter(schemas__isnull=self.value() == "no").distinct()
        return queryset


class EventSchemaInline(admin.TabularInline):  # type: ignore[type-arg]
    """A type's schema versions, read-only: versions are registered through the API (PUT .../schema)."""

    model = EventSchema
    fields = ["version", "registered_at", "registered_by", "forced", "schema_view"]
    readonly_fields = ["version", "registered_at", "registered_by", "forced", "schema_view"]
    extra = 0
    can_delete = False
    ordering = ["-version"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="schema")
    def schema_view(self, schema: EventSchema) -> str:
        return json_html(schema.schema)


class EventTypeForm(forms.ModelForm):  # type: ignore[type-arg]
    """A type staff add follows the API's rules for a name: dotted, bounded, none of the log's own."""

    class Meta:
        model = EventType
        fields = ["name", "description", "validation", "owner"]

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"]
        problems = event_type_name_errors(name, "name")
        if problems:
            raise forms.ValidationError(problems[0].message, code=problems[0].code)
        return name


@admin.register(EventType)
class EventTypeAdmin(AuditedChanges):
    """Types register themselves on first sight; staff describe them and choose how their payloads
    are checked. Strict deployments add them here."""

    list_display = ["name", "description", "event_count", "schema_column", "validation", "schema_violations",
                    "last_seen_at", "events_link"]  # fmt: skip
    list_filter = ["validation", SchemaPresenceFilter]
    search_fields = ["name"]
    ordering = ["name"]
    fields = ["name", "description", "validation", "owner", "documented_fields", "event_count", "schema_violations",
              "first_seen_at", "last_seen_at", "events_link"]  # fmt: skip
    list_select_related = ["owner"]
    form = EventTypeForm
    readonly_fields = ["documented_fields", "event_count", "schema_violations", "first_seen_at", "last_seen_at",
                       "events_link"]  # fmt: skip
    inlines = [EventSchemaInline]

    class Media:
        css = {"all": ["events/admin.css"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[EventType]:
        types: QuerySet[EventType] = super().get_queryset(request)
        return types.annotate(latest_schema=Max("schemas__version"))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is not None and obj.name.startswith(SERVICE_TYPE_PREFIX):
            return [*self.readonly_fields, "name", "validation", "owner"]  # the log's own: checked by no schema
        return [*self.readonly_fields, "name"] if obj else self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def lock_generation(self, request: HttpRequest, object_id: str | None) -> None:
        # A new validation mode changes what ingest refuses: in force in every process from the
        # answer on, like a registration (events.privacy_generation). The bump comes first in
        # the admin's transaction, before the row is written (the lock order of every change).
        stored = (
            EventType.objects.filter(pk=object_id).values_list("validation", flat=True).first() if object_id else None
        )
        if stored is not None and request.POST.get("validation", stored) != stored:
            generation = privacy_generation.bump()
            transaction.on_commit(lambda: _announce_to_the_stream(request, generation))
        else:
            super().lock_generation(request, object_id)

    @admin.display(description="schema", ordering="latest_schema")
    def schema_column(self, event_type: EventType) -> str:
        latest = getattr(event_type, "latest_schema", None)
        return f"v{latest}" if latest else "none"

    @admin.display(description="documented fields")
    def documented_fields(self, event_type: EventType) -> str:
        """The payload's fields as the latest schema describes them."""
        latest = event_type.schemas.order_by("-version").first()
        if latest is None:
            return "No schema: register one with PUT /api/v1/event-types/<name>/schema."
        rows = [
            format_html(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                path, kind, "required" if required else "", note,
            )
            for path, kind, required, note in documented(latest.schema)
        ]  # fmt: skip
        header = "<tr><th>field</th><th>type</th><th></th><th>description</th></tr>"
        return format_html(
            '<p>From schema v{}.</p><table class="documented-fields">{}{}</table>',
            latest.version, mark_safe(header), mark_safe("".join(rows)),  # noqa: S308 - each row is format_html
        )  # fmt: skip

    @admin.display(description="events")
    def events_link(self, event_type: EventType) -> str:
        url = reverse("admin:events_event_changelist") + f"?type__id__exact={event_type.pk}"
        return format_html('<a href="{}">View {} events</a>', url, event_type.event_count)


def _announce_to_the_stream(request: HttpRequest, generation: int) -> None:
    try:
        stream.announce_generation(generation)
    except Unavailable:
        messages.warning(
            request,
            "Saved and in force for direct writes, but the ingest stream's Redis did not answer: stream-mode "
            "workers apply the new mode once they read it again (within AUDITSVC_SCHEMA_CACHE_SECONDS of Redis "
            "answering).",
        )


def documented(schema: Any, path: str = "payload", required: bool = False) -> list[tuple[str, str, bool, str]]:
    """(path, type, required, description and marks) of every property a schema describes."""
    if not isinstance(schema, dict):
        return []
    rows = []
    declared = schema.get("type", "any")
    kind = " or ".join(declared) if isinstance(declared, list) else str(declared)
    if "enum" in schema:
        kind += " (" + ", ".join(str(v) for v in schema["enum"]) + ")"
    note = " ".join(part for part in (schema.get("description", ""), _mark(schema)) if part)
    if path != "payload":
        rows.append((path, kind, required, note))
    needed = set(schema.get("required", []))
    for name, subschema in schema.get("properties", {}).items():
        rows += documented(subschema, f"{path}.{name}", name in needed)
    if isinstance(schema.get("items"), dict):
        rows += documented(schema["items"], f"{path}[]")
    return rows


def _mark(schema: dict[str, Any]) -> str:
    mark = schema.get("x-auditsvc")
    return f"[{mark}]" if mark else ""


@admin.register(Source)
class SourceAdmin(AuditedChanges):
    list_display = ["slug", "name", "description", "is_active", "created_at", "events_link"]
    search_fields = ["slug", "name"]
    readonly_fields = ["created_at", "events_link"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*self.readonly_fields, "slug"] if obj else self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="events")
    def events_link(self, source: Source) -> str:
        url = reverse("admin:events_event_changelist") + f"?source__id__exact={source.pk}"
        return format_html('<a href="{}">View events</a>', url)


@admin.register(Seal)
class SealAdmin(ReadOnlyAdmin):
    list_display = ["sequence", "created_at", "event_count", "first_received_at", "last_received_at", "signed"]
    ordering = ["-sequence"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    actions = None
    readonly_fields = ["sequence", "created_at", "event_count", "first_received_at", "last_received_at",
                       "merkle_root", "previous_hash", "hash", "signature", "key_id"]  # fmt: skip

    @admin.display(boolean=True)
    def signed(self, seal: Seal) -> bool:
        return bool(seal.signature)


class ApiKeyCreationForm(forms.ModelForm):  # type: ignore[type-arg]
    source = forms.ModelChoiceField(queryset=Source.objects.exclude(slug=SERVICE_SOURCE).order_by("slug"))
    scopes = forms.MultipleChoiceField(
        choices=[(s, s) for s in SCOPES], widget=forms.CheckboxSelectMultiple, initial=["ingest"]
    )

    class Meta:
        model = ApiKey
        fields = ["source", "name", "scopes"]


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedChanges):
    """Superusers only. The secret is shown once, on the page that creates it; never stored."""

    list_display = ["prefix", "source", "name", "scopes", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["source", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["prefix", "name", "source__slug"]
    readonly_fields = ["prefix", "source", "name", "scopes", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]
    form = ApiKeyCreationForm

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys are revoked (action), never edited

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return self.readonly_fields if obj else []

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        issued = create_api_key(source=obj.source, scopes=form.cleaned_data["scopes"], name=obj.name)
        obj.pk, obj.prefix, obj.scopes = issued.api_key.pk, issued.api_key.prefix, issued.api_key.scopes
        obj._plaintext = issued.plaintext  # type: ignore[attr-defined]  # for response_add only

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None) -> HttpResponse:
        # Rendered directly, not redirected: the secret never enters a session, message or log.
        context = {**self.admin_site.each_context(request), "api_key": obj, "secret": obj._plaintext,  # type: ignore[attr-defined]
                   "opts": self.opts, "title": "API key created"}  # fmt: skip
        response = TemplateResponse(request, "admin/events/apikey/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected API keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for api_key in queryset:
            with transaction.atomic():  # the key is revoked with its record, or not at all
                if api_key.revoked_at is not None:
                    continue  # revoked already: nothing changes, nothing to record
                before = self.audit_state(api_key)
                revoke_api_key(prefix=api_key.prefix)
                self.record_change(
                    request, api_key, "revoke", before=before, after=self.stored_state(api_key), message=[]
                )
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)

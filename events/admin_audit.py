"""The admin's side of the access log (events.access_log).

Pages that show events or customers record an `auditsvc.read` (AuditedReads). Changes made in
the admin are recorded as `auditsvc.admin.<action>` events with the object's fields before and
after, stored in the change's own transaction (AuditedChanges).

A ModelAdmin takes these first among its bases. The state before is taken when the
admin loads the object (get_object), the state after when Django logs the change, which it
does after saving the related objects too (a customer's identities, a user's groups). Fields
that hold a secret (a password, a key's hash) are never copied: only whether they changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.contrib.admin import ModelAdmin
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.http import HttpRequest, HttpResponse

from auditsvc.admin_input import CheckedInputAdmin
from events import privacy_generation
from events.access_log import query_filters, record_read
from events.service_events import store_service_event

SECRET_FIELDS = frozenset({"password", "secret_hash"})
ADMIN_VALUE_CHARS = 20_000  # a field's value in a change record: whole, within reason


def staff_actor(request: HttpRequest) -> str:
    return f"staff:{request.user.get_username()}"


def snapshot(obj: models.Model) -> dict[str, Any]:
    """The object's own fields and many-to-many names, as JSON values; a secret field (already a
    hash of the secret) as a short digest of that hash."""
    state: dict[str, Any] = {}
    for field in obj._meta.concrete_fields:
        value = field.value_from_object(obj)
        if field.name in SECRET_FIELDS:  # that it changed shows; what it is does not
            state[field.name] = f"sha256:{hashlib.sha256(str(value).encode()).hexdigest()[:12]}" if value else ""
            continue
        state[field.attname] = value
    if obj.pk is not None:
        for m2m in obj._meta.many_to_many:
            state[m2m.name] = sorted(str(related) for related in getattr(obj, m2m.name).all())
    result: dict[str, Any] = json.loads(json.dumps(state, cls=DjangoJSONEncoder))
    return result


def record_admin_read(request: HttpRequest, *, returned: int, of: str, details: dict[str, Any]) -> None:
    record_read(actor=staff_actor(request), via="admin", endpoint=request.path, returned=returned,
                details={"of": of, **details})  # fmt: skip


class AuditedReads(ModelAdmin):  # type: ignore[type-arg]
    """Records each list page and each object page this admin shows (GET, answered 200)."""

    audit_read_of = "events"  # what the list's rows are
    audit_personal_filters: tuple[str, ...] = ()  # parameters searching contact fields: recorded as HMACs

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None) or {}
        if request.method == "GET" and response.status_code == 200 and "cl" in context:
            details = {"filters": query_filters(request.GET, personal=self.audit_personal_filters)}
            record_admin_read(request, returned=len(context["cl"].result_list), of=self.audit_read_of, details=details)
        return response

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        response = super().change_view(request, object_id, form_url, extra_context)
        context = getattr(response, "context_data", None) or {}
        if request.method == "GET" and response.status_code == 200 and context.get("original") is not None:
            returned, of, details = self.audit_object_read(context["original"], context)
            record_admin_read(request, returned=returned, of=of, details=details)
        return response

    def audit_object_read(self, obj: Any, context: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
        """(how many, of what, details) for the page of obj."""
        return 1, self.audit_read_of, {"object_id": str(obj.pk)}


@contextmanager
def _generation_locked_for(request: HttpRequest, lock: Any) -> Iterator[None]:
    """For a POST, a transaction that takes the privacy generation's lock (lock()) first."""
    if request.method != "POST":
        yield
        return
    with transaction.atomic():
        lock()
        yield


class AuditedChanges(CheckedInputAdmin):
    """Records each addition, change and deletion made through this admin."""

    # A change writes its row, then its record through the write path, which takes the privacy
    # generation's shared lock; an erasure or a registration takes that lock first, then rows:
    # the opposite order, a deadlock. So a change takes the lock before it writes anything.
    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, *args: Any, **kwargs: Any
    ) -> HttpResponse:
        with _generation_locked_for(request, lambda: self.lock_generation(request, object_id)):
            return super().changeform_view(request, object_id, *args, **kwargs)

    def delete_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with _generation_locked_for(request, privacy_generation.locked_generation):
            return super().delete_view(request, *args, **kwargs)

    def changelist_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # Its actions (delete selected) and list edits.
        with _generation_locked_for(request, privacy_generation.locked_generation):
            return super().changelist_view(request, *args, **kwargs)

    def lock_generation(self, request: HttpRequest, object_id: str | None) -> None:
        """The lock a change through this admin takes first: shared (a change that moves the
        generation, such as a type's validation, takes it exclusively: events.admin)."""
        privacy_generation.locked_generation()

    def audit_state(self, obj: models.Model) -> dict[str, Any]:
        """What the record shows of obj: its snapshot; a subclass adds related rows."""
        return snapshot(obj)

    def audit_customer(self, obj: models.Model) -> str:
        """The customer whose history this change belongs to ("" for none)."""
        return ""

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        obj = super().get_object(request, object_id, from_field)
        if obj is not None:
            _states_before(request)[_key(obj)] = self.audit_state(obj)
        return obj

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        entry = super().log_addition(request, obj, message)
        self.record_change(request, obj, "add", before=None, after=self.stored_state(obj), message=message)
        return entry

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        entry = super().log_change(request, obj, message)
        before = _states_before(request).get(_key(obj))
        self.record_change(request, obj, "change", before=before, after=self.stored_state(obj), message=message)
        return entry

    def stored_state(self, obj: models.Model) -> dict[str, Any]:
        """The state after, as stored (defaults the database filled in included)."""
        return self.audit_state(type(obj)._default_manager.filter(pk=obj.pk).first() or obj)

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        entries = super().log_deletions(request, queryset)
        for obj in queryset:
            self.record_change(request, obj, "delete", before=self.audit_state(obj), after=None, message=[])
        return entries

    def record_change(
        self,
        request: HttpRequest,
        obj: Any,
        action: str,
        *,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        message: Any,
    ) -> None:
        actor = staff_actor(request)
        label = obj._meta.verbose_name
        verbs = {"add": "added", "change": "changed", "delete": "deleted", "revoke": "revoked"}
        changed = sorted(
            k for k in set(before or {}) | set(after or {}) if (before or {}).get(k) != (after or {}).get(k)
        )
        payload = {
            "model": obj._meta.label_lower,
            "object_id": str(obj.pk),
            "object": str(obj),
            "before": before,
            "after": after,
            "changed_fields": changed,
            "changes": message if isinstance(message, list) else [message] if message else [],
        }
        with transaction.atomic():  # the admin's own transaction where there is one
            store_service_event(
                max_chars=ADMIN_VALUE_CHARS,
                type=f"auditsvc.admin.{action}",
                actor=actor,
                description=f"{actor} {verbs[action]} {label} “{obj}”",
                payload=payload,
                customer=self.audit_customer(obj),
            )


def _key(obj: models.Model) -> tuple[str, str]:
    return (obj._meta.label_lower, str(obj.pk))


def _states_before(request: HttpRequest) -> dict[tuple[str, str], dict[str, Any]]:
    states: dict[tuple[str, str], dict[str, Any]] | None = getattr(request, "_audit_states_before", None)
    if states is None:
        states = {}
        request._audit_states_before = states  # type: ignore[attr-defined]
    return states

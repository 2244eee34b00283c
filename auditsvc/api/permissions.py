"""Scope checks: a view names the scope each action needs; keys without it get 403."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

READ_SCOPE = "read"
READ_OWN_SCOPE = "read:own"
READ_PERMISSION = "events.view_event"
SCHEMA_SCOPE = "schema"
SCHEMA_PERMISSION = "events.change_eventtype"


class DenyAll(BasePermission):
    """The default: a view that forgets to declare its permissions serves nobody."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return False


class HasScope(BasePermission):
    """Requires the API key scope in view.required_scopes[action] (or view.required_scope).

    A `read:own` key passes for "read" on the actions in view.read_own_actions, which then
    show it only its own source's events (events.api.views.own_source_only)."""

    message = "This API key does not have the scope this endpoint needs."
    code = "permission_denied"

    def has_permission(self, request: Request, view: Any) -> bool:
        scopes: dict[str, str] = getattr(view, "required_scopes", {})
        scope = scopes.get(getattr(view, "action", "") or "", getattr(view, "required_scope", None))
        if scope is None:
            return False
        if request.auth is None:
            # A signed-in person (admin session): reads with the view permission
            # (the Auditors group), never ingest: events come from services.
            return self._session_may(request.user, scope)
        refusal = key_scope_refusal(
            getattr(request.auth, "scopes", []),
            scope,
            read_own_allowed=getattr(view, "action", None) in getattr(view, "read_own_actions", ()),
        )
        if refusal is not None:
            self.message = refusal
        return refusal is None

    def _session_may(self, user: Any, scope: str) -> bool:
        """A signed-in person (admin session) reads with the view permission (the Auditors
        group) and registers schemas with the change permission on event types; never ingests:
        events come from services."""
        if user is None or not user.is_authenticated:
            self.message = "Sessions may only read, with the view permission on events."
            return False
        if scope == SCHEMA_SCOPE:
            self.message = "Registering schemas needs the change permission on event types."
            return bool(user.has_perm(SCHEMA_PERMISSION))
        self.message = "Sessions may only read, with the view permission on events."
        return bool(scope == READ_SCOPE and user.has_perm(READ_PERMISSION))


def key_scope_refusal(scopes_held: list[str], scope: str, *, read_own_allowed: bool = False) -> str | None:
    """Why a key holding scopes_held may not do what needs scope (None: it may). A `read:own`
    key passes for "read" where read_own_allowed. HasScope and the accept path both ask this."""
    if scope in scopes_held:
        return None
    if scope == READ_SCOPE and READ_OWN_SCOPE in scopes_held:
        if read_own_allowed:
            return None
        return "A 'read:own' key reads its own source's events; this endpoint needs 'read'."
    return f"This API key lacks the '{scope}' scope."

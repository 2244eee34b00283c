"""The admin site: Django's, with the log's health on its first page (events.dashboard)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse


class AuditAdminSite(admin.AdminSite):
    index_template = "admin/auditsvc/index.html"

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        from events.dashboard import dashboard  # noqa: PLC0415 - the models are loaded by the first request

        context = dict(extra_context or {})
        if request.user.has_perm("events.view_event"):  # staff outside the auditors see links only
            context["health"] = dashboard()
        return super().index(request, context)

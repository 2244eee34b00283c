from __future__ import annotations

from django.contrib.admin import apps


class AuditAdminConfig(apps.AdminConfig):
    """django.contrib.admin with auditsvc's site: its first page shows the log's health."""

    default = False  # named in INSTALLED_APPS; the auditsvc app itself keeps its plain config
    default_site = "auditsvc.admin_site.AuditAdminSite"

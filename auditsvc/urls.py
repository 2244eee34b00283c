"""Every route of the service, one hop away."""

from django.contrib import admin
from django.urls import include, path
from rest_framework.routers import SimpleRouter

from auditsvc import health
from events.views import EventViewSet

api = SimpleRouter(trailing_slash=False)
api.register("events", EventViewSet, basename="event")

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("api/v1/", include(api.urls)),
    path("admin/", admin.site.urls),
]

handler404 = "auditsvc.api.exceptions.not_found"
handler500 = "auditsvc.api.exceptions.server_error"

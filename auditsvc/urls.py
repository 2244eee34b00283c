"""Every route of the service, one hop away."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from auditsvc import health, metrics
from customers.views import CustomerViewSet
from events.api.views import EventTypeViewSet, EventViewSet, IntegrityViewSet, SourceViewSet, StatsViewSet

api = SimpleRouter(trailing_slash=False)
api.register("events", EventViewSet, basename="event")  # POST ingest; GET list, {id}, {id}/proof, export
api.register("customers", CustomerViewSet, basename="customer")  # list, {external_id}, {external_id}/events
api.register("event-types", EventTypeViewSet, basename="event-type")
api.register("sources", SourceViewSet, basename="source")
api.register("stats", StatsViewSet, basename="stats")  # stats/counts, stats/durations
api.register("integrity", IntegrityViewSet, basename="integrity")  # integrity/seals, integrity/public-key

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/"), name="home"),  # the staff's first page
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("api/v1/", include(api.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("admin/", admin.site.urls),
]

handler404 = "auditsvc.api.exceptions.not_found"
handler500 = "auditsvc.api.exceptions.server_error"

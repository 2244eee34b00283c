"""django-filter with strict parameters: an unknown query parameter is a 400, not ignored."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django_filters.rest_framework import DjangoFilterBackend

from auditsvc.api.pagination import PAGINATION_PARAMS
from auditsvc.errors import FieldError, InvalidInput


class StrictFilterBackend(DjangoFilterBackend):
    """Rejects parameters that are neither a filter, pagination, a dynamic-prefix filter
    (FilterSet.dynamic_prefixes, e.g. payload.<path>) nor in view.extra_query_params."""

    def filter_queryset(self, request: Any, queryset: QuerySet[Any], view: Any) -> QuerySet[Any]:
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is not None:
            allowed = (
                set(filterset_class.base_filters) | PAGINATION_PARAMS | set(getattr(view, "extra_query_params", ()))
            )
            prefixes = tuple(getattr(filterset_class, "dynamic_prefixes", ()))
            unknown = [
                key
                for key in request.query_params
                if key not in allowed and not (prefixes and key.startswith(prefixes))
            ]
            if unknown:
                raise InvalidInput(
                    [FieldError(key, "unknown_parameter", f"Unknown query parameter '{key}'.") for key in unknown]
                )
        return super().filter_queryset(request, queryset, view)  # type: ignore[no-any-return]

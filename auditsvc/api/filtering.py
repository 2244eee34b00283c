"""django-filter with strict parameters: an unknown query parameter is a 400, not ignored."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from django_filters.utils import translate_validation

from auditsvc.api.pagination import PAGINATION_PARAMS
from auditsvc.errors import FieldError, InvalidInput


def reject_unknown_params(request: Any, allowed: set[str], prefixes: tuple[str, ...] = ()) -> None:
    """400 naming every query parameter that is not allowed (nor starts with a prefix)."""
    unknown = [
        key for key in request.query_params if key not in allowed and not (prefixes and key.startswith(prefixes))
    ]
    if unknown:
        raise InvalidInput(
            [FieldError(key, "unknown_parameter", f"Unknown query parameter '{key}'.") for key in unknown]
        )


class StrictFilterBackend(DjangoFilterBackend):
    """Rejects parameters that are neither a filter, pagination, a dynamic-prefix filter
    (FilterSet.dynamic_prefixes, e.g. payload.<path>) nor in view.extra_query_params."""

    def valid_filterset(self, request: Any, queryset: QuerySet[Any], view: Any) -> Any:
        """The view's FilterSet bound to the request, validated: its qs, and its parsed values
        (form.cleaned_data) for views that need them too."""
        filterset_class = self.get_filterset_class(view, queryset)
        assert filterset_class is not None  # every view using this backend declares one
        allowed = set(filterset_class.base_filters) | PAGINATION_PARAMS | set(getattr(view, "extra_query_params", ()))
        reject_unknown_params(request, allowed, tuple(getattr(filterset_class, "dynamic_prefixes", ())))
        filterset = filterset_class(request.query_params, queryset=queryset, request=request)
        if not filterset.is_valid():
            raise translate_validation(filterset.errors)  # type: ignore[misc]  # a DRF ValidationError
        return filterset

    def filter_queryset(self, request: Any, queryset: QuerySet[Any], view: Any) -> QuerySet[Any]:
        return self.valid_filterset(request, queryset, view).qs  # type: ignore[no-any-return]

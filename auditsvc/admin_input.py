"""What the admin takes from a request is checked before it reaches a query.

Django's changelist turns any query-string parameter that names a field into a lookup
(?occurred_at__year=99999999999, an offset PostgreSQL refuses, an unindexed column of a table
of hundreds of millions of rows), and an action filters on whatever ids were posted. Here a
changelist filters only through the controls it declares (list_filter, and the links that set
them), and an action runs only on ids of the model: anything else is a message, never a 500.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.admin import ModelAdmin, helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect


class DeclaredFiltersChangeList(ChangeList):
    """A changelist whose query string holds only its declared filters' parameters; any other
    lookup is Django's IncorrectLookupParameters (the list again, with "?e=1")."""

    def get_filters(self, request: HttpRequest) -> Any:
        filters = super().get_filters(request)
        remaining = filters[2]  # the lookups no declared filter took
        if remaining:
            raise IncorrectLookupParameters(f"Not a filter of this list: {', '.join(sorted(remaining))}")
        return filters


class CheckedInputAdmin(ModelAdmin):  # type: ignore[type-arg]
    """The base of every ModelAdmin of the service (see the module docstring)."""

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return DeclaredFiltersChangeList

    def response_action(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        pk = self.model._meta.pk
        assert pk is not None
        try:
            for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
                pk.run_validators(pk.to_python(value))
        except ValidationError:
            self.message_user(request, "The selection holds a value that is not an id of this list.", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
        return super().response_action(request, queryset)

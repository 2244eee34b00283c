"""Counting without COUNT(*) over a whole table: exact when small, the planner's estimate when large."""

from __future__ import annotations

from typing import Any

import orjson
from django.core.exceptions import EmptyResultSet
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.utils.functional import cached_property

COUNT_LIMIT = 10_000


def bounded_count(queryset: QuerySet[Any]) -> tuple[int, bool]:
    """(count, is_estimate): exact up to COUNT_LIMIT, else the planner's row estimate."""
    limit = COUNT_LIMIT
    exact = queryset.order_by().values("pk")[: limit + 1].count()
    if exact <= limit:
        return exact, False
    return max(planner_estimate(queryset), limit + 1), True


def planner_estimate(queryset: QuerySet[Any]) -> int:
    """The planner's row estimate for queryset (EXPLAIN, nothing executed)."""
    try:
        sql, params = queryset.order_by().values("pk").query.sql_with_params()
    except EmptyResultSet:  # queryset.none(), or a filter Django knows matches nothing
        return 0
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    plan = orjson.loads(plan) if isinstance(plan, str | bytes) else plan
    return int(plan[0]["Plan"]["Plan Rows"])


class EstimatedCountPaginator(Paginator):  # type: ignore[type-arg]
    """A Paginator whose count is bounded_count(): the admin never counts a big table.

    count_is_estimate tells templates to say "about".
    """

    count_is_estimate = False

    @cached_property
    def count(self) -> int:
        if not isinstance(self.object_list, QuerySet):
            return len(self.object_list)
        # Clearly large (by the planner's estimate): say so without counting anything; a
        # bounded count of 10,001 rows still costs a scan when a search matches widely.
        estimate = planner_estimate(self.object_list)
        if estimate > 2 * COUNT_LIMIT:
            self.count_is_estimate = True
            return estimate
        total, self.count_is_estimate = bounded_count(self.object_list)
        return total

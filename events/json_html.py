"""A JSON value as escaped, syntax-highlighted, collapsible HTML (for the admin's payload view).

Everything the payload contains is passed through format_html/escape: a payload holding
"<script>" shows those characters, it never runs them.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

MAX_ITEMS = 500  # per container: a 10,000-element array renders its head and says so


def json_html(value: Any, *, depth: int = 0) -> SafeString:
    if isinstance(value, dict):
        return _container(value.items(), "{", "}", depth, keyed=True)
    if isinstance(value, list):
        return _container(enumerate(value), "[", "]", depth, keyed=False)
    if isinstance(value, str):
        return format_html('<span class="json-string">{}</span>', orjson.dumps(value).decode())
    if isinstance(value, bool) or value is None:
        return format_html('<span class="json-literal">{}</span>', orjson.dumps(value).decode())
    return format_html('<span class="json-number">{}</span>', orjson.dumps(value).decode())


def _container(items: Any, opening: str, closing: str, depth: int, *, keyed: bool) -> SafeString:
    entries = list(items)
    if not entries:
        return format_html('<span class="json-punct">{}{}</span>', opening, closing)
    shown = entries[:MAX_ITEMS]
    rows = format_html_join(
        "",
        '<div class="json-row">{}{}</div>',
        (
            (
                format_html('<span class="json-key">{}</span>: ', orjson.dumps(key).decode()) if keyed else "",
                json_html(item, depth=depth + 1),
            )
            for key, item in shown
        ),
    )
    more = (
        format_html('<div class="json-more">… {} more</div>', len(entries) - MAX_ITEMS)
        if len(entries) > MAX_ITEMS
        else ""
    )
    noun = ("key" if keyed else "item") + ("" if len(entries) == 1 else "s")
    summary = f"{opening} {len(entries)} {noun} {closing}"
    opened = " open" if depth < 3 else ""
    return format_html(
        '<details class="json-node"{}><summary>{}</summary><div class="json-children">{}{}</div></details>',
        mark_safe(opened),  # noqa: S308 - a constant attribute
        summary,
        rows,
        more,
    )

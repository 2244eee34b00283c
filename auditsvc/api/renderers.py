from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from rest_framework.renderers import BaseRenderer

from events.integrity.canonical import big_ints_as_floats


class ORJSONRenderer(BaseRenderer):
    """JSON via orjson: several times faster than the stdlib encoder DRF uses by default."""

    media_type = "application/json"
    format = "json"
    charset = None

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if data is None:
            return b""
        try:
            return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError:
            # jsonb writes a large float as its digits (1e20 → 100000000000000000000), which
            # read back as an integer orjson cannot write: the float it was, like the hash.
            return orjson.dumps(big_ints_as_floats(data), option=orjson.OPT_NON_STR_KEYS)

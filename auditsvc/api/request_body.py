"""Reading a JSON request body within a size cap, before any parsing."""

from __future__ import annotations

import zlib
from typing import Any

from django.http import HttpRequest
from rest_framework.request import Request

from auditsvc.errors import FieldError, ProblemError


def content_type_of(request: HttpRequest | Request) -> str:
    """The Content-Type header as sent, parameters included (as DRF's request.content_type;
    a Django request's content_type has lost them)."""
    meta = request.META
    return str(meta.get("CONTENT_TYPE", meta.get("HTTP_CONTENT_TYPE", "")))


def read_json_body(
    request: HttpRequest | Request, *, max_bytes: int, media_type: str | None = "application/json"
) -> bytes:
    """The raw body of a DRF or a plain Django request (the accept path's); 415 unless of
    media_type (None: the caller checks), 413 above max_bytes (from Content-Length, or while
    reading)."""
    if media_type is not None and content_type_of(request).split(";")[0].strip().lower() != media_type:
        raise ProblemError(
            [FieldError(None, "unsupported_media_type", f"Send the body as Content-Type: {media_type}.")],
            status=415,
        )
    too_large = ProblemError(
        [FieldError(None, "body_too_large", f"The request body is over the {max_bytes}-byte limit.")], status=413
    )
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > max_bytes:
        raise too_large
    # Read at most one byte past the cap: a chunked body without Content-Length is cut off too.
    body: bytes = _body_stream(request).read(max_bytes + 1)
    if len(body) > max_bytes:
        raise too_large
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding == "gzip":
        return _gunzip(body, max_bytes, too_large)
    if encoding not in ("", "identity"):
        raise ProblemError(
            [FieldError("Content-Encoding", "unsupported_content_encoding", "Use gzip or no Content-Encoding.")],
            status=415,
        )
    return body


def _body_stream(request: HttpRequest | Request) -> Any:
    """The body's stream. Django reads Content-Length bytes, so a chunked body (no length)
    would read as empty; gunicorn decodes chunked bodies and marks its input as terminated,
    and then the input itself is read (still within the cap)."""
    meta = request.META
    if not meta.get("CONTENT_LENGTH") and meta.get("wsgi.input_terminated"):
        return meta["wsgi.input"]
    return getattr(request, "_request", request)  # DRF's wraps Django's


def _gunzip(body: bytes, max_bytes: int, too_large: ProblemError) -> bytes:
    """Inflate a gzip body, stopping at the cap: a small bomb cannot become a large body."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        inflated = inflater.decompress(body, max_bytes + 1)
    except zlib.error:
        raise ProblemError(
            [FieldError("Content-Encoding", "malformed_body", "The body is not valid gzip.")], status=400
        ) from None
    if len(inflated) > max_bytes or inflater.unconsumed_tail:
        raise too_large
    if not inflater.eof:
        raise ProblemError(
            [FieldError("Content-Encoding", "malformed_body", "The gzip body is truncated.")], status=400
        )
    return inflated

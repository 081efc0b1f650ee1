"""HTTP request and response values shared by the health server and the dashboard.

Pure helpers (no I/O): parsing the query string, cookies and forms, and the
Server-Sent Events wire format. The health server turns h11 events into a
:class:`HttpRequest`, calls the dashboard, and writes the :class:`HttpResponse`
(or, for a stream, each chunk its ``stream`` yields).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from ._exceptions import BadRequest

# Every response of the daemon's HTTP listener carries these (health routes too).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-resource-policy", "same-origin"),
)
HTML = "text/html; charset=utf-8"
MAX_QUERY_VALUE = 500


@dataclass(frozen=True)
class HttpRequest:
    """One request as the dashboard sees it; header names are lower case."""

    method: str
    path: str
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def params(self) -> dict[str, str]:
        """The query string's parameters (last one wins); raises BadRequest if malformed."""
        return _pairs(self.query)

    def form(self) -> dict[str, str]:
        """An ``application/x-www-form-urlencoded`` body's fields."""
        try:
            return _pairs(self.body.decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest("the form is not UTF-8") from None

    def cookies(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in self.headers.get("cookie", "").split(";"):
            name, sep, value = part.strip().partition("=")
            if sep:
                out[name] = value
        return out


Stream = Callable[[], AsyncIterator[bytes]]


@dataclass
class HttpResponse:
    """A complete answer (``body``) or, when ``stream`` is set, a chunked stream that the
    server writes until the generator ends or the client goes away."""

    status: int
    content_type: str = "text/plain; charset=utf-8"
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: Stream | None = None


def text(status: int, message: str, **kw: Any) -> HttpResponse:
    return HttpResponse(status, body=message.encode() + b"\n", **kw)


def _pairs(raw: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=False,
                          max_num_fields=50, errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed parameters: {exc}") from None
    out = {}
    for key, value in pairs:
        if len(value) > MAX_QUERY_VALUE:
            raise BadRequest(f"parameter {key!r} is too long")
        out[key] = value
    return out


def sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    """One Server-Sent Events message (``data`` as one line of JSON)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return (head + f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n").encode()


SSE_HEARTBEAT = b": keep-alive\n\n"

"""Exceptions of the dashboard.

Hierarchy::

    WebError                 base of everything the dashboard raises on purpose
    ├── NotFound             the path or the run id does not exist (404)
    └── BadRequest           the client sent a malformed query, form or header (400)

    TokenError               the configured token file cannot be used (at start)

A bug in the dashboard is any other exception: the health server answers 500
and logs it; the daemon keeps serving.
"""

from __future__ import annotations


class WebError(Exception):
    """Base class; ``status`` is the HTTP status the server answers with."""

    status = 500


class NotFound(WebError):
    """Raised by a page handler when the path or the run it names does not exist."""

    status = 404


class BadRequest(WebError):
    """Raised while parsing a request the client got wrong (query, form, cookie)."""

    status = 400


class TokenError(Exception):
    """Raised by :func:`load_token` (``web._auth``) at start when the configured token file
    cannot be used (unreadable or empty); the daemon refuses to start with the message."""

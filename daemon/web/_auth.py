"""Who may read the dashboard: loopback by default, a token otherwise.

Pure decisions (the token is read once, by :func:`load_token`).

* ``dashboard_auth = "auto"`` (default): no token on a loopback address
  (``127.0.0.0/8``, ``::1``, ``localhost``); any other address requires one.
* ``"token"``: a token is required everywhere (a shared machine's loopback is
  everybody's).

The token comes from ``dashboard_token_file`` or, under systemd, the
credential ``$CREDENTIALS_DIRECTORY/dashboard_token``. It is accepted as an
``Authorization: Bearer`` header, or as the cookie the login form sets (the
cookie holds an HMAC of the token, not the token). Never from the query
string: URLs end up in logs and browser history. When a token is required but
none is configured the dashboard refuses every page (fail closed); the health
routes stay open.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from ._exceptions import TokenError as TokenError

COOKIE = "autopack_dashboard"
CREDENTIAL = "dashboard_token"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (as in ``health_listen``) only accepts local connections."""
    host = host.strip("[]")
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def load_token(token_file: str | None, env: dict[str, str] | None = None) -> str | None:
    """The dashboard token, or ``None`` when none is configured.

    Raises :class:`TokenError` when ``token_file`` is set but unreadable or empty.
    """
    env = dict(os.environ) if env is None else env
    path = token_file
    if not path and env.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(env["CREDENTIALS_DIRECTORY"]) / CREDENTIAL
        path = str(candidate) if candidate.is_file() else None
    if not path:
        return None
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"cannot read the dashboard token file {path}: {exc}") from None
    if len(token) < 16:
        raise TokenError(f"the dashboard token in {path} is shorter than 16 characters")
    return token


@dataclass(frozen=True)
class Gate:
    """The access decision for one daemon: ``required`` and the ``token`` (if any)."""

    required: bool
    token: str | None

    @classmethod
    def for_listener(cls, host: str, mode: str, token: str | None) -> Gate:
        return cls(required=mode == "token" or not is_loopback(host), token=token)

    @property
    def misconfigured(self) -> bool:
        """A token is required but none is configured: every page is refused."""
        return self.required and not self.token

    def cookie_value(self) -> str:
        assert self.token is not None
        return hmac.new(self.token.encode(), b"autopack-dashboard-session",
                        hashlib.sha256).hexdigest()

    def check_token(self, candidate: str) -> bool:
        return self.token is not None and hmac.compare_digest(candidate.encode(),
                                                              self.token.encode())

    def allows(self, authorization: str, cookie: str | None) -> bool:
        """Whether a request with this ``Authorization`` header and session cookie may read."""
        if not self.required:
            return True
        if not self.token:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and self.check_token(value.strip()):
            return True
        return cookie is not None and hmac.compare_digest(cookie.encode(),
                                                          self.cookie_value().encode())

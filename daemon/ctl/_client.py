"""Blocking client for the control socket (used by autopackctl, tests and benches).

Imports only :mod:`autopack.protocol`; re-exported at ``autopack.daemon._client``.

No trio here on purpose: ``autopackctl status`` should start fast.
"""

from __future__ import annotations

import _socket  # the C module: socket.py adds ~4 ms of enum set-up this client never uses
import os
from collections.abc import Iterator
from typing import Any

from autopack.protocol import (
    DEFAULT_MAX_FRAME,
    Error,
    FrameBuffer,
    Hello,
    ListRuns,
    RemoteError,
    Request,
    RunStatus,
    Welcome,
    decode_reply,
    encode_frame,
    recv_frame_blocking,
)
from autopack.protocol._paths import SYSTEM_SOCKET, default_socket_for, default_state_dir

from ._errors import DaemonUnavailable

__all__ = ["SYSTEM_SOCKET", "Client", "DaemonUnavailable", "resolve_socket"]


def resolve_socket(explicit: str | None = None) -> str:
    """``--socket``, then ``AUTOPACK_SOCKET``, then the system service's socket when it
    exists, then the default path of a daemon run by this user."""
    if explicit:
        return explicit
    if os.environ.get("AUTOPACK_SOCKET"):
        return os.environ["AUTOPACK_SOCKET"]
    if not os.environ.get("AUTOPACK_STATE_DIR") and os.path.exists(SYSTEM_SOCKET):
        return SYSTEM_SOCKET
    state = os.environ.get("AUTOPACK_STATE_DIR") or default_state_dir()
    return default_socket_for(state)


class Client:
    """One connection to ``autopackd``. Use as a context manager; closes the socket on exit."""

    def __init__(self, path: str, *, timeout: float | None = 30.0,
                 max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.path = path
        self._timeout = timeout
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except FileNotFoundError:
            self.sock.close()
            raise DaemonUnavailable(f"autopackd is not running (no socket at {path})") from None
        except ConnectionRefusedError:
            self.sock.close()
            raise DaemonUnavailable(f"autopackd is not running (socket {path} refuses connections)") from None
        except PermissionError:
            self.sock.close()
            raise DaemonUnavailable(f"no permission to use the socket {path}") from None
        except OSError as exc:
            self.sock.close()
            raise DaemonUnavailable(f"cannot connect to {path}: {exc.strerror or exc}") from None
        self._buf = FrameBuffer(max_frame)
        try:
            self.welcome: Welcome = self._hello()
        except BaseException:
            self.sock.close()
            raise

    def _hello(self) -> Welcome:
        reply = self.request(Hello())
        if not isinstance(reply, Welcome):
            raise RemoteError("bad_frame", f"unexpected reply to hello: {type(reply).__name__}")
        return reply

    def send(self, msg: Request) -> None:
        try:
            self.sock.sendall(encode_frame(msg))
        except OSError as exc:
            raise DaemonUnavailable(f"connection to autopackd lost: {exc}") from None

    def recv(self, timeout: float | None = None) -> Any:
        """The next reply. With ``timeout``: ``None`` when nothing complete arrived in
        that many seconds (a partial frame stays buffered for the next call)."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            body = recv_frame_blocking(self.sock, self._buf)
        except TimeoutError:
            if timeout is not None:
                return None
            raise DaemonUnavailable("autopackd did not answer in time") from None
        except (EOFError, OSError) as exc:
            raise DaemonUnavailable(f"connection to autopackd lost: {exc}") from None
        finally:
            if timeout is not None:
                self.sock.settimeout(self._timeout)
        reply = decode_reply(body)
        if isinstance(reply, Error):
            raise RemoteError(reply.code, reply.message, reply.details)
        return reply

    def request(self, msg: Request) -> Any:
        """Send one request and return its reply; raises :class:`RemoteError` on an ``Error`` reply."""
        self.send(msg)
        return self.recv()

    def stream(self, msg: Request) -> Iterator[Any]:
        """Send one request and yield replies until the connection ends or the caller stops."""
        self.send(msg)
        while True:
            yield self.recv()

    def runs(self, *, state: str | None = None, states: list[str] | None = None,
             limit: int | None = None, page: int = 500) -> Iterator[RunStatus]:
        """Every run (newest first; at most ``limit``), asked for page by page with the
        daemon's cursor, so no reply passes the frame limit whatever the history's length.
        Runs submitted meanwhile are newer than the first page and are not repeated."""
        before: int | None = None
        left = limit
        while left is None or left > 0:
            want = page if left is None else min(page, left)
            reply = self.request(ListRuns(state=state, states=list(states or []), limit=want,
                                          before=before))
            yield from reply.runs
            if left is not None:
                left -= len(reply.runs)
            if reply.next_cursor is None or not reply.runs:
                return
            before = reply.next_cursor

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""ControlServer: the unix socket, framing, peer check and per-connection tasks.

Each connection is served by its own task. The first message must be
``Hello``; the peer's uid/gid (``SO_PEERCRED``) must be the daemon's own uid,
root, or configured. Malformed, oversized or unknown frames get an ``Error``
reply with a stable code and the connection is closed; nothing else is
affected. Requests are dispatched to the handler object (``_app.Daemon``).
"""

from __future__ import annotations

import grp
import logging
import os
import socket
import stat
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from typing import Any

import anyio
import msgspec
import trio
from autopack.protocol import (
    PROTOCOL_VERSION,
    Error,
    ErrorCode,
    FrameBuffer,
    FrameTooLarge,
    Hello,
    ProtocolError,
    Reply,
    Welcome,
    decode_request,
    encode_frame,
)

LOGGER = logging.getLogger(__name__)
_CRED = struct.Struct("3i")  # pid, uid, gid


class ControlStats(msgspec.Struct, frozen=True, kw_only=True):
    connections_total: int
    connections_active: int
    rejected: int
    bad_frames: int


def peer_credentials(sock: Any) -> tuple[int, int, int]:
    """(pid, uid, gid) of the peer of a connected unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    pid, uid, gid = _CRED.unpack(raw)
    return pid, uid, gid


def bind_unix_socket(path: str, mode: int, group: str | None) -> socket.socket:
    """Create, bind and listen on ``path`` with ``mode`` (and ``group``) set before anyone
    can connect. A stale socket file from a dead daemon is replaced; a live one is refused."""
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, mode=0o700, exist_ok=True)
    if os.path.exists(path):
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise OSError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale
        else:
            raise OSError(f"another daemon is already listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, mode)
    if group:
        os.chown(path, -1, grp.getgrnam(group).gr_gid)
    sock.listen(512)
    return sock


class Connection:
    """One client connection: read frames, send replies."""

    def __init__(self, stream: trio.SocketStream, max_frame: int) -> None:
        self.stream = stream
        self.buf = FrameBuffer(max_frame)

    async def send(self, msg: Reply) -> None:
        await self.stream.send_all(encode_frame(msg))

    async def error(self, code: ErrorCode | str, message: str, details: list[str] | None = None) -> None:
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.send(Error(code=str(code), message=message, details=details or []))

    async def frames(self) -> AsyncIterator[bytes]:
        while True:
            body = self.buf.next_frame()
            if body is not None:
                yield body
                continue
            data = await self.stream.receive_some(65536)
            if not data:
                if self.buf.pending:
                    raise ProtocolError("connection closed in the middle of a frame")
                return
            self.buf.feed(data)


class ControlServer:
    """Serves the control socket. ``handler.dispatch(conn, request)`` answers requests."""

    def __init__(self, sock: socket.socket, handler: Any, *, max_frame: int,
                 allowed_uids: Callable[[], set[int]], allowed_gids: Callable[[], set[int]]) -> None:
        self.sock = sock
        self.handler = handler
        self.max_frame = max_frame
        self.allowed_uids = allowed_uids
        self.allowed_gids = allowed_gids
        self._total = 0
        self._active = 0
        self._rejected = 0
        self._bad = 0
        self._listener: trio.SocketListener | None = None

    def statistics(self) -> ControlStats:
        return ControlStats(connections_total=self._total, connections_active=self._active,
                            rejected=self._rejected, bad_frames=self._bad)

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        self._listener = trio.SocketListener(trio.socket.from_stdlib_socket(self.sock))
        task_status.started()
        async with self._listener, trio.open_nursery() as nursery:
            while True:
                try:
                    stream = await self._listener.accept()
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    return  # stop accepting (shutdown)
                except OSError as exc:  # EMFILE and friends: back off, keep serving
                    LOGGER.warning("accept failed: %s", exc)
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(self._serve_connection, stream)

    async def stop_accepting(self) -> None:
        if self._listener is not None:
            await self._listener.aclose()

    def _allowed(self, uid: int, gid: int) -> bool:
        if uid in (0, os.getuid()) or uid in self.allowed_uids():
            return True
        gids = self.allowed_gids()
        if not gids:
            return False
        if gid in gids:
            return True
        try:
            import pwd

            name = pwd.getpwuid(uid).pw_name
            return any(name in grp.getgrgid(g).gr_mem for g in gids)
        except KeyError:
            return False

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        self._total += 1
        self._active += 1
        conn = Connection(stream, self.max_frame)
        try:
            async with stream:
                _pid, uid, gid = peer_credentials(stream.socket)
                if not self._allowed(uid, gid):
                    self._rejected += 1
                    LOGGER.warning("refused control connection from uid %d gid %d", uid, gid)
                    await conn.error(ErrorCode.FORBIDDEN,
                                     f"uid {uid} is not allowed to use this daemon")
                    return
                await self._converse(conn)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # client went away
        finally:
            self._active -= 1

    async def _converse(self, conn: Connection) -> None:
        greeted = False
        try:
            async for body in conn.frames():
                try:
                    request = decode_request(body)
                except ProtocolError as exc:
                    self._bad += 1
                    await conn.error(ErrorCode.BAD_FRAME, str(exc))
                    return
                if not greeted:
                    if not isinstance(request, Hello):
                        await conn.error(ErrorCode.HELLO_REQUIRED,
                                         "the first message on a connection must be hello")
                        return
                    if request.version != PROTOCOL_VERSION:
                        await conn.error(ErrorCode.VERSION_MISMATCH,
                                         f"daemon speaks protocol v{PROTOCOL_VERSION}, "
                                         f"client v{request.version}")
                        return
                    greeted = True
                    await conn.send(Welcome(daemon=self.handler.version, pid=os.getpid()))
                    continue
                keep_open = await self.handler.dispatch(conn, request)
                if keep_open is False:
                    return
        except FrameTooLarge as exc:
            self._bad += 1
            await conn.error(ErrorCode.FRAME_TOO_LARGE, str(exc))
        except ProtocolError as exc:
            self._bad += 1
            await conn.error(ErrorCode.BAD_FRAME, str(exc))

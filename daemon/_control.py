"""ControlServer: the unix socket, framing, peer check and per-connection tasks.

Each connection is served by its own task. The first message must be
``Hello``; the peer's uid/gid (``SO_PEERCRED``) must be the daemon's own uid,
root, or configured. Malformed, oversized or unknown frames get an ``Error``
reply with a stable code and the connection is closed; nothing else is
affected. Requests are dispatched to the handler object (``_handler.RequestHandler``).
"""

from __future__ import annotations

import grp
import logging
import os
import secrets
import socket
import stat
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from typing import Any

import anyio
import msgspec
import trio
from autopack.actors._failpoints import hit_async
from autopack.protocol import (
    DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION,
    Error,
    ErrorCode,
    FrameBuffer,
    FrameTooLarge,
    Hello,
    InvalidRequest,
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
    rejected_busy: int = 0  # refused: connection cap or buffer cap reached
    timeouts: int = 0  # closed: frame read deadline or idle deadline passed
    buffered_bytes: int = 0  # partial frames held across all connections, now
    invalid_requests: int = 0
    internal_errors: int = 0
    replies_too_large: int = 0


class ControlLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Bounds on what clients may hold (settings of the same names)."""

    max_frame: int = DEFAULT_MAX_FRAME  # largest request frame accepted
    max_reply: int = DEFAULT_MAX_FRAME  # largest reply sent (what every client accepts)
    max_connections: int = 256
    max_buffered_bytes: int = 32 * 1024 * 1024  # partial frames across all connections
    frame_timeout_s: float = 10.0  # a frame must arrive whole within this, once begun
    idle_timeout_s: float = 600.0  # a connection with no request for this long is closed


class _Refused(Exception):
    """Raised inside a connection to end it with an error reply (busy, timeout)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        self.code, self.message = code, message
        super().__init__(message)


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
    """One client connection: read frames (under deadlines and the shared buffer cap),
    send replies (an oversized one becomes a ``reply_too_large`` error)."""

    def __init__(self, stream: trio.SocketStream, server: ControlServer) -> None:
        self.stream = stream
        self.server = server
        self.buf = FrameBuffer(server.limits.max_frame)
        self._held = 0  # bytes of this connection counted in server.buffered
        self.peer_uid: int | None = None  # SO_PEERCRED, once checked

    async def send(self, msg: Reply) -> None:
        frame = encode_frame(msg)
        limit = self.server.limits.max_reply
        if len(frame) - 4 > limit:
            self.server._too_large += 1
            LOGGER.warning("reply %s of %d bytes exceeds the frame limit of %d bytes",
                           type(msg).__name__, len(frame) - 4, limit)
            frame = encode_frame(Error(
                code=str(ErrorCode.REPLY_TOO_LARGE),
                message=f"the reply ({len(frame) - 4} bytes) exceeds the frame limit of "
                        f"{limit} bytes; ask for less (a smaller --limit, one run at a time)"))
        await self.stream.send_all(frame)

    async def error(self, code: ErrorCode | str, message: str, details: list[str] | None = None) -> None:
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.send(Error(code=str(code), message=message, details=details or []))

    def _account(self) -> None:
        now = self.buf.pending
        self.server.buffered += now - self._held
        self._held = now

    def release(self) -> None:
        """Give back this connection's share of the buffer cap (on close)."""
        self.server.buffered -= self._held
        self._held = 0

    async def frames(self) -> AsyncIterator[bytes]:
        """Complete request bodies. Raises :class:`_Refused` on a passed deadline or
        when the shared buffer cap is reached, :class:`ProtocolError` on garbage."""
        limits = self.server.limits
        frame_deadline: float | None = None
        while True:
            body = self.buf.next_frame()
            self._account()
            if body is not None:
                frame_deadline = None
                yield body
                continue
            if self.buf.pending and frame_deadline is None:
                frame_deadline = trio.current_time() + limits.frame_timeout_s
            deadline = frame_deadline or trio.current_time() + limits.idle_timeout_s
            with trio.move_on_at(deadline):
                data = await self.stream.receive_some(65536)
                if not data:
                    if self.buf.pending:
                        raise ProtocolError("connection closed in the middle of a frame")
                    return
                if self.server.buffered + len(data) > limits.max_buffered_bytes:
                    self.server._busy += 1
                    raise _Refused(ErrorCode.BUSY,
                                   f"the daemon holds {self.server.buffered} bytes of unfinished "
                                   f"requests (limit {limits.max_buffered_bytes}); try again")
                self.buf.feed(data)
                self._account()
                continue
            self.server._timeouts += 1
            if frame_deadline is not None:
                raise _Refused(ErrorCode.TIMEOUT, f"a request frame did not arrive whole within "
                                                  f"{limits.frame_timeout_s:g} s")
            raise _Refused(ErrorCode.TIMEOUT, f"no request for {limits.idle_timeout_s:g} s; "
                                              "closing the idle connection")


def request_tag(request: Any) -> str:
    """The wire tag of a request (``"status"``), for logs, failpoints and health."""
    return str(type(request).__struct_config__.tag)


class RequestOutcomes:
    """Per request tag: how many failed with an internal error, in a row, and the last one."""

    def __init__(self) -> None:
        self.errors: dict[str, int] = {}
        self.in_a_row: dict[str, int] = {}
        self.last_error: dict[str, str] = {}

    def ok(self, tag: str) -> None:
        self.in_a_row[tag] = 0

    def failed(self, tag: str, error: str) -> None:
        self.errors[tag] = self.errors.get(tag, 0) + 1
        self.in_a_row[tag] = self.in_a_row.get(tag, 0) + 1
        self.last_error[tag] = error


class ControlServer:
    """Serves the control socket. ``handler.dispatch(conn, request)`` answers requests.

    A handler that raises answers that request ``internal`` with an error id (the
    traceback is logged under the same id) and the connection and daemon serve on."""

    def __init__(self, sock: socket.socket, handler: Any, *, max_frame: int,
                 allowed_uids: Callable[[], set[int]], allowed_gids: Callable[[], set[int]],
                 limits: ControlLimits | None = None) -> None:
        self.sock = sock
        self.handler = handler
        self.limits = limits or ControlLimits(max_frame=max_frame)
        self.max_frame = self.limits.max_frame
        self.allowed_uids = allowed_uids
        self.allowed_gids = allowed_gids
        self.outcomes = RequestOutcomes()
        self.buffered = 0
        self._total = 0
        self._active = 0
        self._rejected = 0
        self._bad = 0
        self._busy = 0
        self._timeouts = 0
        self._invalid = 0
        self._internal = 0
        self._too_large = 0
        self._listener: trio.SocketListener | None = None

    def statistics(self) -> ControlStats:
        return ControlStats(connections_total=self._total, connections_active=self._active,
                            rejected=self._rejected, bad_frames=self._bad,
                            rejected_busy=self._busy, timeouts=self._timeouts,
                            buffered_bytes=self.buffered, invalid_requests=self._invalid,
                            internal_errors=self._internal, replies_too_large=self._too_large)

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
                if self._active >= self.limits.max_connections:
                    self._busy += 1
                    nursery.start_soon(self._refuse_busy, stream)
                    continue
                nursery.start_soon(self._serve_connection, stream)

    async def _refuse_busy(self, stream: trio.SocketStream) -> None:
        async with stream:
            with trio.move_on_after(1), suppress(trio.BrokenResourceError,
                                                 trio.ClosedResourceError):
                await stream.send_all(encode_frame(Error(
                    code=str(ErrorCode.BUSY),
                    message=f"the daemon serves {self.limits.max_connections} connections "
                            "already (max_connections); try again")))

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
        conn = Connection(stream, self)
        try:
            async with stream:
                _pid, uid, gid = peer_credentials(stream.socket)
                if not self._allowed(uid, gid):
                    self._rejected += 1
                    LOGGER.warning("refused control connection from uid %d gid %d", uid, gid)
                    await conn.error(ErrorCode.FORBIDDEN,
                                     f"uid {uid} is not allowed to use this daemon")
                    return
                conn.peer_uid = uid
                await self._converse(conn)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # client went away
        finally:
            conn.release()
            self._active -= 1

    async def _converse(self, conn: Connection) -> None:
        greeted = False
        try:
            async for body in conn.frames():
                try:
                    request = decode_request(body)
                except InvalidRequest as exc:
                    self._invalid += 1
                    await conn.error(exc.code, str(exc), [exc.path] if exc.path else [])
                    continue
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
                if await self._handle(conn, request) is False:
                    return
        except FrameTooLarge as exc:
            self._bad += 1
            await conn.error(ErrorCode.FRAME_TOO_LARGE, str(exc))
        except ProtocolError as exc:
            self._bad += 1
            await conn.error(ErrorCode.BAD_FRAME, str(exc))
        except _Refused as exc:
            LOGGER.info("control connection closed: %s", exc.message)
            await conn.error(exc.code, exc.message)

    async def _handle(self, conn: Connection, request: Any) -> bool | None:
        """One request, isolated: a bug answers ``internal`` with an error id, never more."""
        tag = request_tag(request)
        try:
            await hit_async(f"request.{tag}")
            keep_open: bool | None = await self.handler.dispatch(conn, request)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise  # the client went away mid-reply: not a bug of ours
        except Exception as exc:
            self._internal += 1
            error_id = secrets.token_hex(4)
            self.outcomes.failed(tag, f"{type(exc).__name__}: {exc}")
            LOGGER.error("request %s failed [error id %s]: %s: %s", tag, error_id,
                         type(exc).__name__, exc, exc_info=exc)
            await conn.error(ErrorCode.INTERNAL,
                             f"internal error while handling {tag} (error id {error_id}); "
                             "the daemon log has the details under this id")
            return None
        self.outcomes.ok(tag)
        return keep_open

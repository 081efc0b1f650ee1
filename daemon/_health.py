"""HealthServer: HTTP on loopback with h11. ``/healthz``, ``/readyz``, ``/metrics``; every
other path goes to the dashboard (``autopack.daemon.web``) when one is given.

``/healthz`` answers from the event loop itself (if it answers, the loop is
alive). ``/readyz`` is 200 when the store is writable and the required actors
are up; degraded parts (memory) are listed but do not make it 503.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncGenerator, Awaitable, Callable
from http import HTTPStatus
from typing import Any

import anyio
import h11
import trio

from .web import SECURITY_HEADERS, HttpRequest, HttpResponse

LOGGER = logging.getLogger(__name__)
MAX_REQUEST = 16 * 1024

Route = Callable[[], Awaitable[tuple[int, str, bytes]]]
Fallback = Callable[[HttpRequest], Awaitable[HttpResponse]]


def json_body(status: int, obj: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(obj, sort_keys=True).encode() + b"\n"


class HealthServer:
    def __init__(self, host: str, port: int, routes: dict[str, Route],
                 fallback: Fallback | None = None) -> None:
        self.host, self.port = host, port
        self.routes = routes
        self.fallback = fallback  # the dashboard: every path that is not a health route
        self.bound_port: int | None = None
        self._listeners: list[trio.SocketListener] | None = None

    async def bind(self) -> int:
        """Open the listening sockets now (so a busy port fails the start before anything
        else is touched); returns the bound port. Raises ``OSError``."""
        if self._listeners is None:
            self._listeners = await trio.open_tcp_listeners(self.port, host=self.host)
            self.bound_port = port = int(self._listeners[0].socket.getsockname()[1])
            return port
        assert self.bound_port is not None  # set together with the listeners
        return self.bound_port

    async def aclose(self) -> None:
        """Close listeners that were bound but never served (a start that failed)."""
        for listener in self._listeners or []:
            await listener.aclose()
        self._listeners = None

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        await self.bind()
        listeners, self._listeners = self._listeners or [], None
        task_status.started(self.bound_port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        async with stream:
            try:
                # a stream (the dashboard's live updates) lifts this deadline for itself
                with trio.CancelScope(deadline=trio.current_time() + 30) as scope:
                    await self._serve(stream, conn, scope)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    async def _serve(self, stream: trio.SocketStream, conn: h11.Connection,
                     scope: trio.CancelScope) -> None:
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                # a garbage request line, HTTP/1.1 without Host, oversized headers: answer
                # with the status h11 suggests (400, 431), then close
                status = exc.error_status_hint
                await self._send(stream, conn, status, "text/plain",
                                 f"{status} bad request: {exc}\n".encode())
                return
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                if not data and conn.their_state is h11.CLOSED:
                    return
                continue
            if isinstance(event, h11.Request):
                target = event.target.decode("ascii", "replace").split("?", 1)[0]
                route = self.routes.get(target)
                if route is None and self.fallback is not None:
                    if not await self._delegate(stream, conn, event, scope):
                        return
                    continue
                if event.method not in (b"GET", b"HEAD"):
                    status, ctype, body = 405, "text/plain", b"method not allowed\n"
                elif route is None:
                    status, ctype, body = 404, "text/plain", b"not found\n"
                else:
                    try:
                        status, ctype, body = await route()
                    except Exception as exc:  # a broken probe must not kill the server
                        LOGGER.exception("health route %s failed", target)
                        status, ctype, body = json_body(500, {"error": str(exc)})
                if event.method == b"HEAD":
                    body = b""
                await self._send(stream, conn, status, ctype, body)
                if conn.our_state is h11.MUST_CLOSE:  # "Connection: close" or HTTP/1.0
                    return
                continue
            if isinstance(event, h11.EndOfMessage):
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    try:
                        conn.start_next_cycle()
                    except h11.LocalProtocolError:
                        return
                continue
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return

    async def _delegate(self, stream: trio.SocketStream, conn: h11.Connection,
                        event: h11.Request, scope: trio.CancelScope) -> bool:
        """Answer one request through the dashboard; ``False`` when the connection must close."""
        assert self.fallback is not None
        body = b""
        while True:  # the request body (a login form at most): bounded
            try:
                nxt = conn.next_event()
            except h11.RemoteProtocolError as exc:  # a malformed body (chunking, length)
                await self._send(stream, conn, exc.error_status_hint, "text/plain",
                                 b"bad request\n")
                return False
            if nxt is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return False
                conn.receive_data(data)
            elif isinstance(nxt, h11.Data):
                body += nxt.data
                if len(body) > MAX_REQUEST:
                    await self._send(stream, conn, 413, "text/plain", b"request too large\n")
                    return False
            else:
                break
        target = event.target.decode("ascii", "replace")
        path, _, query = target.partition("?")
        request = HttpRequest(
            method=event.method.decode("ascii", "replace"), path=path, query=query, body=body,
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers})
        try:
            resp = await self.fallback(request)
        except Exception:  # a broken page must not kill the server
            LOGGER.exception("dashboard %s %s failed", request.method, path)
            resp = HttpResponse(500, body=b"internal error (logged)\n")
        if resp.stream is not None:
            scope.deadline = math.inf
            await self._stream(stream, conn, resp)
            return False
        await self._send(stream, conn, resp.status, resp.content_type,
                         b"" if event.method == b"HEAD" else resp.body, resp.headers,
                         length=len(resp.body))
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            return True
        return conn.our_state is not h11.MUST_CLOSE

    @staticmethod
    async def _stream(stream: trio.SocketStream, conn: h11.Connection, resp: HttpResponse) -> None:
        """A chunked response written as its generator yields (Server-Sent Events)."""
        assert resp.stream is not None
        headers = [("content-type", resp.content_type), ("cache-control", "no-store"),
                   *SECURITY_HEADERS, *resp.headers]
        await stream.send_all(conn.send(h11.Response(status_code=resp.status, headers=headers,
                                                     reason=_reason(resp.status))))
        chunks = resp.stream()

        async def until_client_leaves(cancel: trio.CancelScope) -> None:
            try:  # a client sends nothing more on a stream: EOF means it left
                while await stream.receive_some(4096):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            cancel.cancel()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(until_client_leaves, nursery.cancel_scope)
                async for chunk in chunks:
                    await stream.send_all(conn.send(h11.Data(data=chunk)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away mid-write
        except* Exception:  # a broken stream ends itself, never the server
            LOGGER.exception("dashboard stream failed")
        finally:
            with trio.CancelScope(shield=True):
                if isinstance(chunks, AsyncGenerator):  # end it now, not at garbage collection
                    await chunks.aclose()

    @staticmethod
    async def _send(stream: trio.SocketStream, conn: h11.Connection, status: int, ctype: str,
                    body: bytes, extra: list[tuple[str, str]] | None = None,
                    length: int | None = None) -> None:
        headers = [("content-type", ctype),
                   ("content-length", str(len(body) if length is None else length)),
                   ("cache-control", "no-store"), *SECURITY_HEADERS, *(extra or [])]
        if conn.our_state not in (h11.SEND_RESPONSE, h11.IDLE):  # IDLE: an early error reply
            return
        data = conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status)))
        data += conn.send(h11.Data(data=body)) if body else b""
        data += conn.send(h11.EndOfMessage())
        await stream.send_all(data)


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""

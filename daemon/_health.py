"""HealthServer: HTTP on loopback with h11. ``/healthz``, ``/readyz``, ``/metrics``.

``/healthz`` answers from the event loop itself (if it answers, the loop is
alive). ``/readyz`` is 200 when the store is writable and the required actors
are up; degraded parts (memory) are listed but do not make it 503.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import h11
import trio

LOGGER = logging.getLogger(__name__)
MAX_REQUEST = 16 * 1024

Route = Callable[[], Awaitable[tuple[int, str, bytes]]]


def json_body(status: int, obj: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(obj, sort_keys=True).encode() + b"\n"


class HealthServer:
    def __init__(self, host: str, port: int, routes: dict[str, Route]) -> None:
        self.host, self.port = host, port
        self.routes = routes
        self.bound_port: int | None = None

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.bound_port = listeners[0].socket.getsockname()[1]
        task_status.started(self.bound_port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        async with stream:
            try:
                with trio.move_on_after(30):
                    await self._serve(stream, conn)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    async def _serve(self, stream: trio.SocketStream, conn: h11.Connection) -> None:
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                await self._send(stream, conn, 400, "text/plain", b"bad request\n")
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

    @staticmethod
    async def _send(stream: trio.SocketStream, conn: h11.Connection, status: int, ctype: str,
                    body: bytes) -> None:
        headers = [("content-type", ctype), ("content-length", str(len(body))),
                   ("cache-control", "no-store")]
        if conn.our_state is not h11.SEND_RESPONSE:
            return
        data = conn.send(h11.Response(status_code=status, headers=headers))
        data += conn.send(h11.Data(data=body)) if body else b""
        data += conn.send(h11.EndOfMessage())
        await stream.send_all(data)

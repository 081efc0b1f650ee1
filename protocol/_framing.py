"""Length-prefixed msgpack frames: 4-byte big-endian length, then the body.

Pure functions plus a blocking-socket helper for the CLI; the daemon side
uses :class:`FrameBuffer` over whatever stream it has.
"""

from __future__ import annotations

import functools
import struct
from typing import Any, Protocol

import msgspec

from ._errors import FrameTooLarge, InvalidRequest, ProtocolError
from ._messages import ClientMessage, Reply, Request, ServerMessage


class Receiver(Protocol):
    """What :func:`recv_frame_blocking` needs of a blocking socket (``socket.socket``, or
    the C ``_socket.socket`` the client uses to skip ``socket.py``'s import cost)."""

    def recv(self, bufsize: int, /) -> bytes: ...

DEFAULT_MAX_FRAME = 1024 * 1024
_HEADER = struct.Struct(">I")

_encoder = msgspec.msgpack.Encoder()


@functools.cache
def _decoder(side: str) -> msgspec.msgpack.Decoder[Any]:
    """Built once, on first use: the client never needs the request decoder, and building
    one for a union of tagged Structs costs a few ms of autopackctl's start-up."""
    return msgspec.msgpack.Decoder(ClientMessage if side == "request" else ServerMessage)


def encode_frame(msg: Request | Reply) -> bytes:
    """Encode one message as a frame (header + body)."""
    body = _encoder.encode(msg)
    return _HEADER.pack(len(body)) + body


def decode_request(body: bytes) -> Any:
    """Decode a request body.

    Raises :class:`ProtocolError` on garbage (not msgpack, unknown message tag) and
    :class:`InvalidRequest` when a known message has a field out of its bounds."""
    try:
        return _decoder("request").decode(body)
    except msgspec.ValidationError as exc:  # a subclass of DecodeError: first
        text = str(exc)
        path = text.rsplit(" - at `", 1)[1].rstrip("`") if " - at `" in text else ""
        if path in ("", "$", "$.t"):
            raise ProtocolError(f"cannot decode request: {text}") from None
        raise InvalidRequest(f"invalid request: {text}", path) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"cannot decode request: {exc}") from None


def decode_reply(body: bytes) -> Any:
    """Decode a reply body; raises :class:`ProtocolError` on garbage."""
    try:
        return _decoder("reply").decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(f"cannot decode reply: {exc}") from None


class FrameBuffer:
    """Incremental frame splitter: ``feed`` bytes, iterate ``frames()``.

    Raises :class:`FrameTooLarge` as soon as a header announces more than
    ``max_frame`` bytes, before any body is buffered.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> bytes | None:
        """Return the next complete body, or ``None`` if more bytes are needed."""
        if len(self._buf) < 4:
            return None
        (size,) = _HEADER.unpack_from(self._buf)
        if size > self.max_frame:
            raise FrameTooLarge(f"frame of {size} bytes exceeds the limit of {self.max_frame}")
        if len(self._buf) < 4 + size:
            return None
        body = bytes(self._buf[4 : 4 + size])
        del self._buf[: 4 + size]
        return body

    @property
    def pending(self) -> int:
        return len(self._buf)


def recv_frame_blocking(sock: Receiver, buf: FrameBuffer) -> bytes:
    """Read one frame body from a blocking socket; ``EOFError`` if the peer closed."""
    while True:
        body = buf.next_frame()
        if body is not None:
            return body
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by the daemon")
        buf.feed(chunk)

"""Exceptions and stable error codes of the control protocol.

Hierarchy::

    AutopackError                 base of everything autopack raises on purpose
    ├── ProtocolError             the peer sent bytes that are not a valid frame/message
    │   ├── FrameTooLarge         a frame's declared length exceeds the limit
    │   └── InvalidRequest        a well-formed message whose values are out of bounds
    ├── SpecError                 a run spec is invalid; carries every problem found
    ├── StorageError              the database could not be written (disk full, I/O error)
    └── RemoteError               the daemon answered with an ``Error`` reply (client side)

A "bug in autopack" is any other exception: it is never turned into a reply
code other than ``internal``.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable error codes carried by ``Error`` replies. Never rename one."""

    BAD_FRAME = "bad_frame"  # undecodable msgpack or unknown message tag
    FRAME_TOO_LARGE = "frame_too_large"
    VERSION_MISMATCH = "version_mismatch"
    HELLO_REQUIRED = "hello_required"
    FORBIDDEN = "forbidden"  # peer uid/gid not allowed
    INVALID_SPEC = "invalid_spec"
    INVALID_PLAN = "invalid_plan"
    UNKNOWN_RUN = "unknown_run"
    AMBIGUOUS_RUN = "ambiguous_run"  # a short run id matching several runs
    NOT_SUPPORTED = "not_supported"
    INVALID_STATE = "invalid_state"  # e.g. cancel of a finished run
    SHUTTING_DOWN = "shutting_down"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"  # a bug in autopack; the message carries an error id for the log
    INVALID_REQUEST = "invalid_request"  # a field of a request is out of its documented bounds
    REPLY_TOO_LARGE = "reply_too_large"  # the answer would exceed the frame limit
    BUSY = "busy"  # connection or buffer cap reached; try again
    TIMEOUT = "timeout"  # a frame (or an idle connection) exceeded its read deadline
    STORAGE = "storage"  # the database could not write (disk full, I/O error); retry later


class AutopackError(Exception):
    """Base of the errors autopack raises on purpose."""


class ProtocolError(AutopackError):
    """Raised by the framing/decoding layer when the peer sent garbage."""

    code = ErrorCode.BAD_FRAME


class FrameTooLarge(ProtocolError):
    """Raised when a frame header announces more than the configured maximum."""

    code = ErrorCode.FRAME_TOO_LARGE


class InvalidRequest(ProtocolError):
    """Raised by ``decode_request`` when a message decodes but a field is out of bounds.

    ``path`` is the field (``$.after``); the connection stays usable."""

    code = ErrorCode.INVALID_REQUEST

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        super().__init__(message)


class SpecError(AutopackError):
    """Raised by :func:`load_spec` / :func:`validate_spec` with *every* problem.

    ``problems`` is a list of ``(path, reason)`` pairs, e.g.
    ``("phases[1].id", "duplicate id 'build'")``.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p}: {r}" if p else r for p, r in problems))


class StorageError(AutopackError):
    """Raised by the daemon's store when a write transaction failed as a whole (disk full,
    I/O error): nothing of it was committed, and retrying later may succeed. Requests get
    the ``storage`` error code; a run that meets it ends failed with the reason."""

    code = ErrorCode.STORAGE


class RemoteError(AutopackError):
    """Raised by the client when the daemon answers with an ``Error`` reply."""

    def __init__(self, code: str, message: str, details: list[str] | None = None) -> None:
        self.code = code
        self.message = message
        self.details = details or []
        super().__init__(f"{code}: {message}")

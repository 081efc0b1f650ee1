"""The client's exceptions. Every one is a user-facing problem: ``autopackctl`` prints it
as one line on stderr (no traceback) and exits 2.

Hierarchy::

    CtlError                bad usage or input the client itself detects
    └── DaemonUnavailable   the control socket cannot be reached (raised by ``Client``)

Errors the daemon reports come as :class:`autopack.protocol.RemoteError` (its code in
brackets on the same line).
"""

from __future__ import annotations

__all__ = ["CtlError", "DaemonUnavailable"]


class CtlError(Exception):
    """A usage/connection/validation problem: printed as one line, exit status 2.

    Raised by subcommand functions; the dispatcher in ``_main`` prints it.
    """


class DaemonUnavailable(CtlError):
    """Raised by :class:`~autopack.daemon.ctl.Client` when the daemon's socket cannot be
    reached (not running, wrong path, no permission) or the connection drops."""

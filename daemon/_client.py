"""Old import path of the blocking client: it lives in :mod:`autopack.daemon.ctl._client`."""

from autopack.daemon.ctl._client import SYSTEM_SOCKET as SYSTEM_SOCKET
from autopack.daemon.ctl._client import Client as Client
from autopack.daemon.ctl._client import DaemonUnavailable as DaemonUnavailable
from autopack.daemon.ctl._client import resolve_socket as resolve_socket

__all__ = ["SYSTEM_SOCKET", "Client", "DaemonUnavailable", "resolve_socket"]

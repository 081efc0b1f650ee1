"""Where the daemon's state and control socket live by default.

Shared by ``autopackd`` (which creates them) and ``autopackctl`` (which looks
for them), so both agree without the client importing the server's settings.
Pure functions of the environment; stdlib ``os`` only.
"""

from __future__ import annotations

import os

SYSTEM_SOCKET = "/run/autopack/autopackd.sock"  # the systemd units' socket


def default_state_dir() -> str:
    """``$STATE_DIRECTORY`` (systemd), else ``$XDG_STATE_HOME/autopack``, else ``~/.local/state/autopack``."""
    if os.environ.get("STATE_DIRECTORY"):
        return os.environ["STATE_DIRECTORY"].split(":")[0]
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "autopack")


def default_socket_for(state_dir: str) -> str:
    """``$RUNTIME_DIRECTORY/autopackd.sock`` (systemd), else ``<state_dir>/autopackd.sock``."""
    if os.environ.get("RUNTIME_DIRECTORY"):
        return os.path.join(os.environ["RUNTIME_DIRECTORY"].split(":")[0], "autopackd.sock")
    return os.path.join(state_dir, "autopackd.sock")

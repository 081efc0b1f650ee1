"""Old entry point of ``autopackctl`` (console scripts installed before the move still
point here): the client lives in :mod:`autopack.daemon.ctl`."""

from autopack.daemon.ctl._main import main as main

__all__ = ["main"]

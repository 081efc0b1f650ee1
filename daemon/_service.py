"""Process-level glue: logging, systemd notification, trio.run, exit status."""

from __future__ import annotations

import logging
import sys

import trio

from ._app import Daemon, StartupError
from ._config import Settings
from ._supervisor import SupervisorGaveUp

LOGGER = logging.getLogger("autopack.daemon")


def run_daemon(settings: Settings, *, config_file: str | None = None) -> int:
    """Run the daemon until it stops. Exit status: 0 clean stop, 1 gave up, 2 cannot start."""
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    daemon = Daemon(settings, config_file=config_file)
    try:
        trio.run(daemon.run)
    except BaseException as exc:  # sorted below; anything else is a bug and propagates
        startup = _find(exc, StartupError)
        if startup is not None:
            print(f"autopackd: {startup}", file=sys.stderr)
            return 2
        gave_up = _find(exc, SupervisorGaveUp)
        if gave_up is not None:
            LOGGER.critical("giving up: %s", gave_up)
            return 1
        if _find(exc, KeyboardInterrupt) is not None:
            return 0
        raise
    return 0


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` itself or the first ``kind`` inside (nested) exception groups."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None

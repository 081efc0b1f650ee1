"""Process-level glue: logging, systemd notification, trio.run, exit status."""

from __future__ import annotations

import logging
import sys

import trio

from ._app import Daemon, StartupError, StoreDied
from ._config import Settings
from ._supervisor import SupervisorGaveUp

LOGGER = logging.getLogger("autopack.daemon")


def run_daemon(settings: Settings, *, config_file: str | None = None) -> int:
    """Run the daemon until it stops. Exit status: 0 clean stop, 1 gave up, 2 cannot start."""
    from ._logging import LogFormat, setup_logging
    from ._notify import Notifier, activated_unix_listener

    try:
        fmt: LogFormat = "json" if settings.log_format == "json" else "text"  # checked at load
        redactor = setup_logging(settings.log_level, fmt)
    except ValueError as exc:
        print(f"autopackd: {exc}", file=sys.stderr)
        return 2
    from autopack.actors._failpoints import FailpointSyntaxError, configure

    try:
        configure()  # inert unless AUTOPACK_FAILPOINTS is set (tests inject faults with it)
    except FailpointSyntaxError as exc:
        print(f"autopackd: {exc}", file=sys.stderr)
        return 2
    # read systemd's variables first and remove them, so checks never inherit them
    notifier = Notifier.from_env()
    try:
        listener = activated_unix_listener()
    except OSError as exc:
        print(f"autopackd: socket activation: {exc}", file=sys.stderr)
        return 2
    daemon = Daemon(settings, config_file=config_file,
                    listen_sock=listener, notifier=notifier, redactor=redactor)
    try:
        trio.run(daemon.run)
    except BaseException as exc:  # sorted below; anything else is a bug and propagates
        notifier.stopping()
        startup = _find(exc, StartupError)
        if startup is not None:
            print(f"autopackd: {startup}", file=sys.stderr)
            return 2
        gave_up = _find(exc, SupervisorGaveUp) or _find(exc, StoreDied)
        if gave_up is not None:
            LOGGER.critical("giving up: %s", gave_up)
            return 1
        if _find(exc, KeyboardInterrupt) is not None:
            return 0
        raise
    finally:
        notifier.close()
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

"""systemd integration: sd_notify, the watchdog and socket activation, stdlib only.

Theory of operation
-------------------
systemd tells a service how to reach it through environment variables:

* ``NOTIFY_SOCKET`` — an ``AF_UNIX`` datagram socket (a path, or an abstract
  name written ``@name``). The service sends newline-separated ``KEY=VALUE``
  assignments: ``READY=1``, ``STATUS=...``, ``RELOADING=1``, ``STOPPING=1``,
  ``WATCHDOG=1``. :class:`Notifier` keeps one unconnected datagram socket
  open for the life of the process (the small PyPI wrapper opens one per
  message and leaks it) and closes it in :meth:`Notifier.close`.
* ``WATCHDOG_USEC`` / ``WATCHDOG_PID`` — with ``WatchdogSec=`` set, the
  service must send ``WATCHDOG=1`` at least that often. :func:`watchdog_loop`
  pings at half the interval, and only while the caller's ``alive()`` check
  passes. It runs on the event loop it guards: a loop wedged by blocking code
  cannot run it, the pings stop, and systemd restarts the daemon.
* ``LISTEN_FDS`` / ``LISTEN_PID`` — socket activation: descriptors 3, 4, ...
  are already bound and listening. :func:`listen_fds` returns them.

Outside systemd every call here is a cheap no-op (``send`` returns False), so
the daemon calls them unconditionally.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, MutableMapping
from types import TracebackType
from typing import NoReturn

import anyio

LOGGER = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3
"""First descriptor passed by socket activation (``SD_LISTEN_FDS_START`` in sd-daemon.h)."""

_SEND_TIMEOUT_S = 1.0
# systemd reads its notification socket promptly and gives it a large receive
# buffer; the timeout only bounds the damage if the manager is wedged.


def _socket_address(value: str) -> str | bytes | None:
    """``NOTIFY_SOCKET`` → an address for ``sendto``; ``@name`` is abstract (leading NUL)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    # systemd also allows vsock: addresses (VMs); not for a build-box daemon.
    return None


class Notifier:
    """Sends sd_notify state changes to systemd; a no-op when not run under systemd.

    Build it with :meth:`from_env` at start-up and :meth:`close` it (or use it
    as a context manager) at exit. Every sender returns True when the datagram
    was sent, False when there is no systemd to tell or sending failed (logged,
    never raised: a notification is never worth crashing the daemon for).
    """

    def __init__(self, address: str | None, *, watchdog_interval: float | None = None) -> None:
        """``address``: the ``NOTIFY_SOCKET`` value (path or ``@abstract``), or None to disable.

        ``watchdog_interval``: the ping period in seconds (half of ``WatchdogSec``), or None.
        """
        self._address = _socket_address(address) if address else None
        if address and self._address is None:
            LOGGER.warning("NOTIFY_SOCKET=%r is not a unix socket address; not notifying", address)
        self._watchdog_interval = watchdog_interval
        self._sock: socket.socket | None = None
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.settimeout(_SEND_TIMEOUT_S)

    @classmethod
    def from_env(
        cls, env: MutableMapping[str, str] | None = None, *, unset_environment: bool = True
    ) -> Notifier:
        """A notifier for ``NOTIFY_SOCKET`` / ``WATCHDOG_USEC`` / ``WATCHDOG_PID`` in ``env``.

        ``env`` defaults to ``os.environ``. With ``unset_environment`` the
        variables are removed afterwards, so that the checks and tools the
        daemon runs do not inherit them and talk to systemd in its name.
        """
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        interval = watchdog_interval(env)
        if unset_environment:
            for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                env.pop(name, None)
        return cls(address, watchdog_interval=interval)

    @property
    def enabled(self) -> bool:
        """True when there is a systemd notification socket to talk to."""
        return self._sock is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings (half of ``WatchdogSec=``), or None when off."""
        return self._watchdog_interval

    def send(self, state: str) -> bool:
        """Send one notification (newline-separated ``KEY=VALUE`` lines); True if sent."""
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto(state.encode("utf-8"), self._address)
        except OSError as exc:
            LOGGER.warning("sd_notify %r failed: %s", state.split("=", 1)[0], exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (start-up finished, or a reload finished), with an optional ``STATUS=``."""
        if status is None:
            return self.send("READY=1")
        return self.send(f"READY=1\nSTATUS={_one_line(status)}")

    def status(self, text: str) -> bool:
        """``STATUS=<text>``, shown by ``systemctl status`` (newlines become spaces)."""
        return self.send(f"STATUS={_one_line(text)}")

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC=``; send :meth:`ready` when the reload is done."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        """``STOPPING=1``: shutdown has begun."""
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the service is alive."""
        return self.send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC=``: ask for more time to start or stop (e.g. a long migration)."""
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def close(self) -> None:
        """Close the notification socket; later sends return False. Idempotent."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds, or None (unset, invalid, or meant for another pid).

    Like ``sd_watchdog_enabled``: when ``WATCHDOG_PID`` is set it must be our pid.
    """
    env = os.environ if env is None else env
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2 / 1_000_000


class Heartbeat:
    """A liveness check for :func:`watchdog_loop`: alive while :meth:`beat` was called recently.

    The supervisor beats from its own loop; if it stops beating (stuck on an
    actor, a deadlock), ``heartbeat()`` turns False after ``max_age_s`` and
    the pings stop. ``clock`` is injectable for tests.
    """

    def __init__(self, max_age_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_s
        self._clock = clock
        self._last = clock()

    def beat(self) -> None:
        """Record that the caller is alive now."""
        self._last = self._clock()

    def __call__(self) -> bool:
        """True if :meth:`beat` was called within ``max_age_s``."""
        return self._clock() - self._last <= self.max_age_s


async def watchdog_loop(notifier: Notifier, interval: float, *, alive: Callable[[], bool]) -> NoReturn:
    """Send ``WATCHDOG=1`` every ``interval`` seconds while ``alive()`` is true; runs until cancelled.

    ``interval`` is the ping period, normally ``notifier.watchdog_interval()``
    (already half of ``WatchdogSec``). Because this task runs on the event
    loop it guards, a loop blocked by synchronous code sends nothing; and when
    ``alive()`` is false (the supervisor's heartbeat is stale) the pings stop
    on purpose, so systemd kills and restarts the daemon.
    """
    if interval <= 0:
        raise ValueError(f"watchdog interval must be positive, got {interval}")
    while True:
        if alive():
            notifier.watchdog()
        else:
            LOGGER.warning("liveness check failed; withholding WATCHDOG=1")
        await anyio.sleep(interval)


def listen_fds(*, unset_environment: bool = True) -> list[int]:
    """Descriptors passed by socket activation (3, 4, ...), or ``[]``.

    Like ``sd_listen_fds(unset_environment)``: the descriptors are ours only
    when ``LISTEN_PID`` is our pid; ``LISTEN_FDS``, ``LISTEN_PID`` and
    ``LISTEN_FDNAMES`` are removed from the environment afterwards (whatever
    the outcome) so that child processes do not claim them; each descriptor
    gets ``FD_CLOEXEC`` so the checks the daemon runs do not inherit the
    control socket. Raises ``OSError`` (EBADF) if a promised descriptor is not
    open.
    """
    try:
        return _listen_fds()
    finally:
        if unset_environment:
            for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
                os.environ.pop(name, None)


def _listen_fds() -> list[int]:
    try:
        pid = int(os.environ.get("LISTEN_PID", ""))
        count = int(os.environ.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    if pid != os.getpid() or count <= 0:
        return []
    fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))
    for fd in fds:
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError as exc:
            raise OSError(errno.EBADF, f"LISTEN_FDS promised descriptor {fd}, which is not open") from exc
        fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
    return fds


def activated_unix_listener(*, unset_environment: bool = True) -> socket.socket | None:
    """The socket-activated control socket, or None when not socket-activated.

    Takes the first passed descriptor that is a listening ``AF_UNIX``
    ``SOCK_STREAM`` socket (``sd_is_socket_unix``) and wraps it in a
    ``socket.socket`` that the caller owns and must close (it is already
    bound and listening: do not bind, chmod or unlink it; systemd owns the
    path). Other passed descriptors are logged and left alone.
    """
    chosen: socket.socket | None = None
    for fd in listen_fds(unset_environment=unset_environment):
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            LOGGER.warning("ignoring socket-activated descriptor %d: not a socket", fd)
            continue
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if chosen is None and sock.family == socket.AF_UNIX and sock.type == socket.SOCK_STREAM and listening:
            chosen = sock
        else:
            LOGGER.warning("ignoring socket-activated descriptor %d (%s, %s)", fd, sock.family, sock.type)
            sock.detach()
    return chosen

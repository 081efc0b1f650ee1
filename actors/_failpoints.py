"""Failpoints: named places where a fault can be injected into a running daemon.

Pure and inert unless ``AUTOPACK_FAILPOINTS`` is set (read once, when the daemon
starts, with :func:`configure`). The syntax is ``name=action;name=N*action``:

* ``panic``  — raise :class:`FailpointPanic` there (a bug's stand-in);
* ``N*panic`` — only the first N times, then inert.

Failpoints in the code (the list ``autopackctl``'s docs and the tests use):

``request.<tag>``  the control server is about to handle a request (``request.status``)
``memory.serve``   the memory actor takes a request off its queue (the actor crashes)
``run.execute``    a run actor is about to execute its run (the actor crashes)

Tests use them to prove isolation through real processes; production never sets them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

ENV = "AUTOPACK_FAILPOINTS"


class FailpointPanic(Exception):
    """Raised where a ``panic`` failpoint is armed (stands in for a bug there)."""


class FailpointSyntaxError(ValueError):
    """Raised by :func:`parse` for a malformed ``AUTOPACK_FAILPOINTS`` value."""


@dataclass
class _Point:
    action: str
    remaining: int | None  # None = every time


_ARMED: dict[str, _Point] = {}


def parse(text: str) -> dict[str, _Point]:
    """``"a=panic;b=3*panic"`` → armed points. Raises :class:`FailpointSyntaxError`."""
    points: dict[str, _Point] = {}
    for item in filter(None, (x.strip() for x in text.split(";"))):
        name, sep, spec = item.partition("=")
        count: int | None = None
        if "*" in spec:
            num, _, spec = spec.partition("*")
            if not num.strip().isdigit():
                raise FailpointSyntaxError(f"{ENV}: bad count in {item!r}")
            count = int(num)
        if not sep or not name.strip() or spec.strip() not in ("panic", "off"):
            raise FailpointSyntaxError(f"{ENV}: expected name=[N*]panic, got {item!r}")
        if spec.strip() == "panic":
            points[name.strip()] = _Point("panic", count)
    return points


def configure(environ: dict[str, str] | None = None) -> None:
    """Arm the failpoints named in ``AUTOPACK_FAILPOINTS`` (none when unset)."""
    env = os.environ if environ is None else environ
    _ARMED.clear()
    _ARMED.update(parse(env.get(ENV, "")))


def hit(name: str) -> None:
    """Pass through failpoint ``name``: raises :class:`FailpointPanic` when it is armed."""
    if not _ARMED:
        return
    point = _ARMED.get(name)
    if point is None:
        return
    if point.remaining is not None:
        if point.remaining <= 0:
            return
        point.remaining -= 1
    raise FailpointPanic(f"failpoint {name} fired")

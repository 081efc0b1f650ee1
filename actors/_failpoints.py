"""Failpoints: named places where a fault can be injected into a running daemon (after gofail).

Theory of operation
-------------------
Every failpoint is a call ``hit("name")`` (or ``await hit_async("name")`` in async code)
at a fixed place in the code. Nothing is armed unless ``AUTOPACK_FAILPOINTS`` is set when
the daemon starts (:func:`configure`) or an operator arms one at run time
(``autopackctl debug failpoint NAME=ACTION``, :func:`arm`). While nothing is armed a hit
costs one function call and one test of an empty dict (see ``bench/failpoints.py``).

A value is ``name=term;name=term`` where a term is ``[N*][every(K)*]action``:

* ``panic``         raise :class:`FailpointPanic` (a bug's stand-in: the actor crashes);
* ``error``         raise :class:`FailpointError` (an ordinary failure the caller handles:
                    the classifier answers "unclassified", memory answers degraded);
* ``sleep(DUR)``    wait ``DUR`` (``250ms``, ``5s``, ``1.5s``, ``2m``) there, then go on;
* ``off``           disarm the failpoint;
* ``N*``            fire only the next N times, then disarm (``3*panic``);
* ``every(K)*``     fire on every K-th pass only (``every(3)*panic``: passes 3, 6, 9, ...).

Every name is in :data:`NAMES` (the docs list them); ``request.<tag>`` takes any request
tag of the control protocol. An unknown name or a malformed term raises
:class:`FailpointSyntaxError` with one line.

Armed points live in one module-level dict used only from the daemon's event loop thread.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

ENV = "AUTOPACK_FAILPOINTS"

# Every failpoint in the code, with where it is and what its actions do there.
NAMES: dict[str, str] = {
    "classifier.classify": "the classifier actor takes a request: panic crashes the actor "
                           "(its requests in flight answer unclassified), error answers "
                           "unclassified, sleep delays the answer",
    "memory.serve": "the memory actor takes any request off its queue: panic crashes it",
    "memory.context_for": "memory builds a prompt's context: panic crashes the actor, error "
                          "or a sleep past memory_deadline_ms answers degraded",
    "memory.record_intention": "memory stores a run's intention (as memory.context_for)",
    "memory.record_outcome": "memory records an attempt's outcome (as memory.context_for)",
    "memory.record_lesson": "memory stores a lesson (as memory.context_for)",
    "memory.lessons": "memory answers `autopackctl lessons` (as memory.context_for)",
    "run.execute": "a run actor is about to execute its run: panic crashes the run's actor "
                   "(retried, then failed after run_crash_limit)",
    "scheduler.fill": "the scheduler looks for runs to start: panic crashes the scheduler "
                      "(runs it was executing are resumed when it restarts)",
    "request.<tag>": "the control server is about to handle a request with this tag "
                     "(request.status, request.submit, ...): panic answers `internal`",
}
ACTIONS = ("panic", "error", "sleep", "off")


class FailpointPanic(Exception):
    """Raised where a ``panic`` failpoint is armed (stands in for a bug there)."""


class FailpointError(Exception):
    """Raised where an ``error`` failpoint is armed (stands in for an ordinary failure)."""


class FailpointSyntaxError(ValueError):
    """Raised by :func:`parse` / :func:`arm` for an unknown name or a malformed term."""


@dataclass
class Point:
    """One armed failpoint."""

    action: str  # panic | error | sleep
    sleep_s: float = 0.0
    remaining: int | None = None  # fires left; None = every time
    every: int = 1  # fire on every K-th pass
    passes: int = 0
    fired: int = 0

    def describe(self) -> str:
        """The term that arms it as it is now (``2*every(3)*sleep(0.5s)``)."""
        text = f"sleep({self.sleep_s:g}s)" if self.action == "sleep" else self.action
        if self.every > 1:
            text = f"every({self.every})*{text}"
        return f"{self.remaining}*{text}" if self.remaining is not None else text


_ARMED: dict[str, Point] = {}
_TERM = re.compile(r"^(?:(\d+)\*)?(?:every\((\d+)\)\*)?([a-z]+)(?:\((.*)\))?$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0}


def known(name: str) -> bool:
    """Whether ``name`` is a failpoint in the code (``request.<tag>``: any request tag)."""
    if name in NAMES and "<" not in name:
        return True
    if name.startswith("request."):
        from autopack.protocol import ClientMessage

        tags = {str(t.__struct_config__.tag) for t in ClientMessage.__args__}
        return name.removeprefix("request.") in tags
    return False


def parse_term(name: str, term: str) -> Point | None:
    """One ``[N*][every(K)*]action`` → a :class:`Point` (``None`` for ``off``).

    Raises :class:`FailpointSyntaxError` naming the failpoint."""
    m = _TERM.match(term.strip())
    if m is None:
        raise FailpointSyntaxError(
            f"failpoint {name}: cannot read {term!r} (expected [N*][every(K)*]ACTION with "
            "ACTION one of panic, error, sleep(DURATION), off)")
    count, every, action, arg = m.groups()
    if action not in ACTIONS:
        raise FailpointSyntaxError(
            f"failpoint {name}: unknown action {action!r} (panic, error, sleep(DURATION), off)")
    if (arg is not None) != (action == "sleep"):
        raise FailpointSyntaxError(f"failpoint {name}: only sleep takes an argument: "
                                   "sleep(250ms), sleep(5s)")
    if action == "off":
        return None
    point = Point(action, remaining=int(count) if count is not None else None,
                  every=int(every) if every is not None else 1)
    if point.remaining == 0 or point.every == 0:
        raise FailpointSyntaxError(f"failpoint {name}: counts must be >= 1 in {term!r}")
    if action == "sleep":
        d = _DURATION.match(arg.strip())
        if d is None:
            raise FailpointSyntaxError(f"failpoint {name}: bad duration {arg!r} "
                                       "(a number with ms, s or m: 250ms, 5s, 1.5m)")
        point.sleep_s = float(d.group(1)) * _UNIT_S[d.group(2)]
        if point.sleep_s > 86_400:
            raise FailpointSyntaxError(f"failpoint {name}: sleep longer than a day: {arg!r}")
    return point


def parse(text: str, *, source: str = ENV) -> dict[str, Point | None]:
    """``"a=panic;b=3*sleep(1s);c=off"`` → ``{name: Point or None (off)}``.

    Raises :class:`FailpointSyntaxError` (one line, naming ``source``)."""
    points: dict[str, Point | None] = {}
    for item in filter(None, (x.strip() for x in text.split(";"))):
        name, sep, term = (x.strip() for x in item.partition("="))
        if not sep or not name or not term:
            raise FailpointSyntaxError(f"{source}: expected NAME=ACTION, got {item!r}")
        if not known(name):
            raise FailpointSyntaxError(
                f"{source}: unknown failpoint {name!r} (known: "
                + ", ".join(sorted(NAMES)) + ")")
        try:
            points[name] = parse_term(name, term)
        except FailpointSyntaxError as exc:
            raise FailpointSyntaxError(f"{source}: {exc}") from None
    return points


def configure(environ: Mapping[str, str] | None = None) -> None:
    """Arm the failpoints named in ``AUTOPACK_FAILPOINTS`` (none when unset); disarms the rest.

    Raises :class:`FailpointSyntaxError` (the daemon exits 2 with its line)."""
    env = os.environ if environ is None else environ
    parsed = parse(env.get(ENV, ""))
    _ARMED.clear()
    _ARMED.update({name: p for name, p in parsed.items() if p is not None})


def arm(text: str) -> dict[str, str]:
    """Arm (or, with ``off``, disarm) the failpoints in ``text`` at run time; all or none.

    Returns what is armed afterwards (see :func:`armed`). Raises :class:`FailpointSyntaxError`."""
    parsed = parse(text, source="failpoint")
    for name, point in parsed.items():
        if point is None:
            _ARMED.pop(name, None)
        else:
            _ARMED[name] = point
    return armed()


def clear() -> None:
    """Disarm every failpoint."""
    _ARMED.clear()


def armed() -> dict[str, str]:
    """``{name: term}`` of every armed failpoint, as it stands (``N*`` counts what is left)."""
    return {name: p.describe() for name, p in sorted(_ARMED.items())}


def fired() -> dict[str, int]:
    """How often each armed failpoint fired since it was armed."""
    return {name: p.fired for name, p in sorted(_ARMED.items())}


def _take(name: str) -> Point | None:
    """The point to fire at this pass of ``name``, or ``None``; counts the pass."""
    point = _ARMED.get(name)
    if point is None:
        return None
    point.passes += 1
    if point.passes % point.every:
        return None
    point.fired += 1
    if point.remaining is not None:
        point.remaining -= 1
        if point.remaining <= 0:
            del _ARMED[name]  # spent: the path is free again
    return point


def _raise(name: str, point: Point) -> None:
    if point.action == "panic":
        raise FailpointPanic(f"failpoint {name} fired (panic)")
    if point.action == "error":
        raise FailpointError(f"failpoint {name} fired (error)")


def hit(name: str) -> None:
    """Pass failpoint ``name`` in synchronous code: raise or sleep (blocking) when armed."""
    if not _ARMED:
        return
    point = _take(name)
    if point is None:
        return
    if point.action == "sleep":
        time.sleep(point.sleep_s)
    _raise(name, point)


async def hit_async(name: str) -> None:
    """Pass failpoint ``name`` in async code: raise, or sleep without blocking the loop."""
    if not _ARMED:
        return
    point = _take(name)
    if point is None:
        return
    if point.action == "sleep":
        import anyio

        await anyio.sleep(point.sleep_s)
    _raise(name, point)

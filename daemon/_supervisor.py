"""Supervisor: owns every long-lived child; restarts a crashed one (one-for-one, OTP style).

A child is an ``async def serve(*, task_status)``. It is started with
``task_group.start`` so the supervisor knows when it is up. When it raises, it is
restarted after a short backoff, on its own: siblings are untouched. Each child has
an *intensity* like an OTP supervisor's: more than ``limit`` restarts within
``window_s`` seconds (``restart_limit`` / ``restart_window_s``, counted per child)
and the supervisor raises :class:`SupervisorGaveUp`; the daemon exits non-zero and
systemd restarts the whole process. A ``degradable`` child (memory, the base pinner)
is restarted forever: the daemon works without it. A child that returns normally is
finished and not restarted.

Restart safety is the child's side of the contract: a ``serve`` that is called again
after it raised must start from fresh resources (a new mailbox, a new listener on the
same socket) and must have failed the requests it held, so no caller waits for an
answer from a dead child.

Clock: ``anyio.current_time()``, so tests drive it with trio's ``autojump_clock``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec

LOGGER = logging.getLogger(__name__)
ChildFn = Callable[..., Coroutine[Any, Any, Any]]


def _first_leaf(exc: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups: what a person wants to read."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class SupervisorGaveUp(Exception):
    """Raised when one child crashed more than ``limit`` times within ``window_s``."""


class ChildStats(msgspec.Struct, frozen=True, kw_only=True):
    """One child as health and metrics show it."""

    name: str
    state: str  # starting | up | restarting | stopped | failed
    restarts: int  # since the daemon started
    last_error: str | None
    degradable: bool = False
    last_crash_at: float | None = None  # the event loop's clock (anyio.current_time())
    recent_restarts: int = 0  # within the intensity window, now
    limit: int = 0  # the intensity: more than ``limit`` restarts ...
    window_s: float = 0.0  # ... within ``window_s`` seconds and the supervisor gives up


@dataclass
class _Child:
    name: str
    fn: ChildFn
    state: str = "starting"
    restarts: int = 0
    last_error: str | None = None
    backoff: float = 0.1
    degradable: bool = False
    last_crash_at: float | None = None
    history: deque[float] = field(default_factory=deque)  # crash times within the window


class Supervisor:
    """Keeps children running; ``limit``/``window_s`` may be changed live (a reload)."""

    def __init__(self, *, limit: int = 5, window_s: float = 60.0, max_backoff: float = 5.0,
                 intensity: Callable[[], tuple[int, float]] | None = None) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_backoff = max_backoff
        # read at every crash when given (the daemon's live settings), else limit/window_s
        self._intensity = intensity
        self.children: dict[str, _Child] = {}

    def intensity(self) -> tuple[int, float]:
        """``(limit, window_s)`` now."""
        return self._intensity() if self._intensity is not None else (self.limit, self.window_s)

    def statistics(self) -> list[ChildStats]:
        now = anyio.current_time()
        limit, window_s = self.intensity()
        return [ChildStats(name=c.name, state=c.state, restarts=c.restarts,
                           last_error=c.last_error, degradable=c.degradable,
                           last_crash_at=c.last_crash_at,
                           recent_restarts=sum(1 for t in c.history if now - t <= window_s),
                           limit=limit, window_s=window_s)
                for c in self.children.values()]

    def total_restarts(self) -> dict[str, int]:
        return {c.name: c.restarts for c in self.children.values()}

    async def start_child(self, tg: Any, name: str, fn: ChildFn, *,
                          degradable: bool = False) -> None:
        """Start ``fn`` under supervision in ``tg``; returns once it reported started.

        A ``degradable`` child (memory) is restarted with backoff forever: the
        daemon works without it, so its crashes never make the daemon give up."""
        child = self.children[name] = _Child(name, fn, degradable=degradable)
        await tg.start(self._keep, child)

    async def _keep(self, child: _Child, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        reported = False
        while True:
            try:
                async with anyio.create_task_group() as tg:
                    await tg.start(child.fn)
                    child.state = "up"
                    child.backoff = 0.1
                    if not reported:
                        reported = True
                        task_status.started()
            except Exception as exc:  # one-for-one: only this child restarts
                child.state = "restarting"
                child.restarts += 1
                leaf = _first_leaf(exc)
                child.last_error = f"{type(leaf).__name__}: {leaf}"
                child.last_crash_at = anyio.current_time()
                LOGGER.error("actor %s crashed (%s); restarting", child.name, child.last_error,
                             exc_info=exc)
                self._record_crash(child)
                await anyio.sleep(child.backoff)
                child.backoff = min(child.backoff * 2, self.max_backoff)
                if not reported:
                    # a child that never came up still lets the daemon start (degraded)
                    reported = True
                    task_status.started()
                continue
            child.state = "stopped"
            if not reported:
                task_status.started()
            return

    def _record_crash(self, child: _Child) -> None:
        """Count the crash in the child's window; raise :class:`SupervisorGaveUp` past the limit."""
        limit, window_s = self.intensity()
        now = child.last_crash_at if child.last_crash_at is not None else anyio.current_time()
        child.history.append(now)
        while child.history and now - child.history[0] > window_s:
            child.history.popleft()
        if child.degradable or len(child.history) <= limit:
            return
        child.state = "failed"
        raise SupervisorGaveUp(
            f"actor {child.name} crashed {len(child.history)} times within {window_s:g} s "
            f"(restart_limit {limit}, restart_window_s {window_s:g}); "
            f"last: {child.last_error}")


def supervised_children(supervisor: Supervisor) -> dict[str, dict[str, Any]]:
    """Each child for ``health``: state, restarts (since start and within the window), the
    intensity limit and the last error."""
    return {c.name: {"state": c.state, "restarts": c.restarts,
                     "recent_restarts": c.recent_restarts, "limit": c.limit,
                     "window_s": c.window_s, "last_error": c.last_error,
                     "degradable": c.degradable}
            for c in supervisor.statistics()}

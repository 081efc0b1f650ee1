"""Supervisor: owns every actor; restarts a crashed child (one-for-one).

A child is an ``async def serve(*, task_status)``. It is started with
``task_group.start`` so the supervisor knows when it is up. When it raises, it
is restarted after a short backoff; more than ``limit`` restarts within
``window_s`` seconds (across all children) and the supervisor raises
:class:`SupervisorGaveUp`, the daemon exits non-zero and systemd restarts the
whole process. A child that returns normally is finished and not restarted.
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
    """Raised when children crashed more than ``limit`` times within ``window_s``."""


class ChildStats(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    state: str  # starting | up | restarting | stopped | failed
    restarts: int
    last_error: str | None
    degradable: bool = False
    last_crash_at: float | None = None  # the event loop's clock (anyio.current_time())


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
    history: deque[float] = field(default_factory=deque)


class Supervisor:
    def __init__(self, *, limit: int = 5, window_s: float = 60.0, max_backoff: float = 5.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_backoff = max_backoff
        self.children: dict[str, _Child] = {}
        self._crashes: deque[float] = deque()

    def statistics(self) -> list[ChildStats]:
        return [ChildStats(name=c.name, state=c.state, restarts=c.restarts,
                           last_error=c.last_error, degradable=c.degradable,
                           last_crash_at=c.last_crash_at)
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
        if child.degradable:
            return
        now = anyio.current_time()  # the event loop's clock (a test's virtual clock too)
        self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > self.window_s:
            self._crashes.popleft()
        if len(self._crashes) > self.limit:
            child.state = "failed"
            raise SupervisorGaveUp(
                f"{len(self._crashes)} actor crashes within {self.window_s:g} s "
                f"(limit {self.limit}); last: {child.name}: {child.last_error}")

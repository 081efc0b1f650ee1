"""Scheduler: starts one RunActor per run, in submit order, under a concurrency limit.

The limit is read live (SIGHUP may change it). Runs held by another daemon
sharing the state dir (their lock is taken) are skipped and retried later.
The scheduler polls the store once a second besides being poked on submit, so
runs submitted to a sibling daemon on the same state dir are seen too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup

from . import _worktree as wt
from ._run import RunActor, RunServices

LOGGER = logging.getLogger(__name__)


class SchedulerStats(msgspec.Struct, frozen=True, kw_only=True):
    running: int
    limit: int
    started_total: int
    peak_running: int
    skipped_locked: int


class Scheduler:
    def __init__(self, services: RunServices, *, limit: Callable[[], int],
                 poll_s: float = 1.0) -> None:
        self.services = services
        self.limit = limit
        self.poll_s = poll_s
        self.active: dict[str, RunActor] = {}
        self._wake = anyio.Event()
        self._tg: TaskGroup | None = None
        self._started_total = 0
        self._peak = 0
        self._skipped = 0
        self._accepting = True
        self._told: set[str] = set()  # runs held elsewhere that we already logged
        self._idle = anyio.Event()
        self._ended: dict[str, anyio.Event] = {}  # runs someone waits to see end
        self.on_run_end: Callable[[str, str], Awaitable[None]] | None = None

    def poke(self) -> None:
        """Look for work now (called after a submit or a run end)."""
        self._wake.set()

    def cancel(self, run_id: str, reason: str = "cancelled by user") -> anyio.Event | None:
        """Cancel an active run; returns an event set once its actor has ended, or ``None``
        if this daemon is not executing the run."""
        actor = self.active.get(run_id)
        if actor is None:
            return None
        actor.cancel(reason)
        return self._ended.setdefault(run_id, anyio.Event())

    async def idle(self) -> None:
        """Return once no run is active (used by the graceful stop)."""
        while self.active:
            self._idle = anyio.Event()
            await self._idle.wait()

    def stop_starting(self) -> None:
        self._accepting = False
        self.services.draining = True

    def statistics(self) -> SchedulerStats:
        return SchedulerStats(running=len(self.active), limit=self.limit(),
                              started_total=self._started_total, peak_running=self._peak,
                              skipped_locked=self._skipped)

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self.services.spawn = self._spawn
            task_status.started()
            while True:
                if self._accepting:
                    await self._fill(tg)
                with anyio.move_on_after(self.poll_s):
                    await self._wake.wait()
                self._wake = anyio.Event()

    def _spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` as a task owned by the scheduler; its failure is logged, not fatal."""
        async def guarded() -> None:
            try:
                await fn(*args)
            except Exception:
                LOGGER.exception("background task %s failed", getattr(fn, "__name__", fn))

        if self._tg is not None:
            self._tg.start_soon(guarded)

    async def _fill(self, tg: TaskGroup) -> None:
        free = self.limit() - len(self.active)
        if free <= 0:
            return
        candidates = await self.services.records.runs_in("interrupted", "queued")  # type: ignore[attr-defined]
        lock_dir = self.services.state_dir / "locks"
        for run_id in candidates:
            if free <= 0:
                break
            if run_id in self.active:
                continue
            try:
                wt.acquire_run_lock(lock_dir, run_id).release()
            except wt.RunLocked as exc:
                self._skipped += 1
                if run_id not in self._told:
                    self._told.add(run_id)
                    LOGGER.warning("not executing %s", exc)
                continue
            actor = RunActor(run_id, self.services)
            self.active[run_id] = actor
            self._started_total += 1
            self._peak = max(self._peak, len(self.active))
            free -= 1
            tg.start_soon(self._drive, run_id, actor)

    async def _drive(self, run_id: str, actor: RunActor) -> None:
        state = "unknown"
        try:
            state = await actor.execute()
        except wt.RunLocked as exc:
            self._skipped += 1
            LOGGER.info("%s; skipping it", exc)
        except Exception:  # never let one run take the scheduler down
            LOGGER.exception("run %s: actor crashed", run_id)
        finally:
            self.active.pop(run_id, None)
            ended = self._ended.pop(run_id, None)
            if ended is not None:
                ended.set()
            if not self.active:
                self._idle.set()
            self.poke()
        if self.on_run_end is not None and state in ("succeeded", "failed", "cancelled"):
            try:
                await self.on_run_end(run_id, state)
            except Exception:
                LOGGER.exception("run %s: end-of-run hook failed", run_id)

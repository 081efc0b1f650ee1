"""Scheduler: starts one RunActor per run, in submit order, under a concurrency limit.

The limit is read live (SIGHUP may change it). Runs held by another daemon
sharing the state dir (their lock is taken) are skipped and retried later.
The scheduler polls the store once a second besides being poked on submit, so
runs submitted to a sibling daemon on the same state dir are seen too.

When a run reaches a terminal state the scheduler posts a :class:`RunEnded` on
the run-ended channel (``ended``): the daemon's services (reports, retention)
read it; the scheduler never waits for them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectSendStream
from autopack.protocol import StorageError

from . import _worktree as wt
from ._engine import crash_backoff, crash_verdict
from ._failpoints import hit_async
from ._run import ENDED, RunActor, RunServices, end_run_directly

LOGGER = logging.getLogger(__name__)


TERMINAL = ENDED  # the engine's terminal run states


class RunEnded(msgspec.Struct, frozen=True):
    """Posted on the run-ended channel once a run reached a terminal ``state``."""

    run_id: str
    state: str


class SchedulerStats(msgspec.Struct, frozen=True, kw_only=True):
    running: int
    limit: int
    started_total: int
    peak_running: int
    skipped_locked: int
    actor_crashes: int = 0


class Scheduler:
    def __init__(self, services: RunServices, *, limit: Callable[[], int],
                 poll_s: float = 1.0, crash_limit: Callable[[], int] = lambda: 3,
                 ended: MemoryObjectSendStream[RunEnded] | None = None) -> None:
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
        self.ended = ended  # the run-ended channel (None: nobody listens)
        # isolation per run: an actor that crashes is retried with backoff, and after
        # crash_limit() crashes in a row its run ends failed with the reason
        self.crash_limit = crash_limit
        self._crashes: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self._cancelling: set[str] = set()  # cancel asked: never (re)start these
        self._pending_end: dict[str, tuple[str, str]] = {}  # ends the store could not record
        self._crashed_total = 0

    def poke(self) -> None:
        """Look for work now (called after a submit or a run end)."""
        self._wake.set()

    def cancel(self, run_id: str, reason: str = "cancelled by user") -> anyio.Event | None:
        """Cancel an active run; returns an event set once its actor has ended, or ``None``
        if this daemon is not executing the run. Either way the run is not (re)started
        until :meth:`cancel_done`: the caller records the end if the actor did not."""
        self._cancelling.add(run_id)
        actor = self.active.get(run_id)
        if actor is None:
            return None
        actor.cancel(reason)
        return self._ended.setdefault(run_id, anyio.Event())

    def cancel_done(self, run_id: str) -> None:
        """The cancel of ``run_id`` is recorded (or failed): forget it."""
        self._cancelling.discard(run_id)
        self._crashes.pop(run_id, None)  # ended: never retried as a crashed run
        self._retry_at.pop(run_id, None)

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
                              skipped_locked=self._skipped, actor_crashes=self._crashed_total)

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start runs until cancelled. Restart-safe: when it crashes, the run actors it owned
        are cancelled with it and their runs are resumed (from their last committed phase)
        by the next ``serve``; the supervisor restarts it."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self.services.spawn = self._spawn
            task_status.started()
            while True:
                await self._record_pending_ends()
                if self._accepting:
                    await hit_async("scheduler.fill")
                    await self._fill(tg)
                with anyio.move_on_after(self.poll_s):
                    await self._wake.wait()
                self._wake = anyio.Event()

    def _spawn(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
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
        try:
            candidates = await self.services.records.runs_in("interrupted", "queued")
        except StorageError as exc:  # a full disk: nothing can start now; try again later
            LOGGER.warning("not starting runs: %s", exc)
            return
        # runs whose actor crashed (their record may say "running"): retried after backoff
        candidates += [r for r in self._crashes if r not in candidates]
        lock_dir = self.services.state_dir / "locks"
        for run_id in candidates:
            if free <= 0:
                break
            if run_id in self.active or run_id in self._cancelling or run_id in self._pending_end:
                continue
            if self._retry_at.get(run_id, 0.0) > anyio.current_time():
                continue  # crashed recently: backing off
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

    async def _crashed(self, run_id: str, exc: Exception) -> str:
        """Count a crash of ``run_id``'s actor; end the run when it is cancelled or has
        crashed ``crash_limit()`` times in a row. Returns the run's state if it ended."""
        self._crashed_total += 1
        n = self._crashes[run_id] = self._crashes.get(run_id, 0) + 1
        limit = max(self.crash_limit(), 1)
        LOGGER.error("run %s: actor crashed (%d of %d in a row): %s: %s", run_id, n, limit,
                     type(exc).__name__, exc, exc_info=exc)
        error = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):  # a note for the log and the engine's replay
            await self.services.records.event(run_id, None, None, "actor_crashed", error=error)
        end = crash_verdict(n, limit, cancelling=run_id in self._cancelling,
                            storage_error=isinstance(exc, StorageError),
                            error=str(exc) if isinstance(exc, StorageError) else error)
        if end is None:
            self._retry_at[run_id] = anyio.current_time() + crash_backoff(n)
            return "unknown"
        self._crashes.pop(run_id, None)
        self._retry_at.pop(run_id, None)
        try:
            with anyio.CancelScope(shield=True):
                await end_run_directly(self.services.records, run_id, *end)
        except Exception as record_exc:
            LOGGER.error("run %s: cannot record its end yet (%s); retrying", run_id, record_exc)
            self._pending_end[run_id] = end
            return "unknown"
        return end[0]

    async def _record_pending_ends(self) -> None:
        """Record the ends that failed to write (full disk), now that it may work again."""
        for run_id, (state, reason) in list(self._pending_end.items()):
            try:
                await end_run_directly(self.services.records, run_id, state, reason)
            except StorageError:
                return  # still failing: next round
            except Exception:
                LOGGER.exception("run %s: cannot record its end", run_id)
            del self._pending_end[run_id]
            LOGGER.info("run %s: recorded as %s (%s)", run_id, state, reason)
            self._post_end(run_id, state)

    async def _drive(self, run_id: str, actor: RunActor) -> None:
        state = "unknown"
        try:
            state = await actor.execute()
            self._crashes.pop(run_id, None)
            self._retry_at.pop(run_id, None)
        except wt.RunLocked as exc:
            self._skipped += 1
            LOGGER.info("%s; skipping it", exc)
        except Exception as exc:  # never let one run take the scheduler down
            state = await self._crashed(run_id, exc)
        except BaseException:
            # cancelled with the scheduler: by a crash of the scheduler (resume the run when
            # it restarts, like a crashed run but not counted as one) or by a stop (the
            # daemon records it interrupted)
            if self._accepting and run_id not in self._cancelling:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    try:
                        await self.services.records.set_run_state(
                            run_id, "interrupted", "the scheduler restarted")
                    except Exception:
                        LOGGER.exception("run %s: cannot record it interrupted", run_id)
                        self._crashes.setdefault(run_id, 0)  # retried as a crashed run
            raise
        finally:
            self.active.pop(run_id, None)
            ended = self._ended.pop(run_id, None)
            if ended is not None:
                ended.set()
            if not self.active:
                self._idle.set()
            self.poke()
        self._post_end(run_id, state)

    def _post_end(self, run_id: str, state: str) -> None:
        """Post a terminal end on the run-ended channel (unbounded: never waits)."""
        if self.ended is None or state not in TERMINAL:
            return
        try:
            self.ended.send_nowait(RunEnded(run_id, state))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            LOGGER.warning("run %s ended %s while the daemon is stopping: no report now",
                           run_id, state)

"""The daemon's background services, one job each, each supervised.

Theory of operation
-------------------
The scheduler posts ``(run_id, state)`` on the *run-ended channel* (a memory
object stream, unbounded: posting never blocks a run) when a run reaches a
terminal state. :class:`ReportsWriter` reads it, writes the run's report and
passes the end on to :class:`Retention`, which prunes old branches and reports
(on every run end, and hourly). :class:`BasePinner` resolves submitted runs'
base refs in batches; :class:`WorktreeSweeper` removes worktrees that belong to
no live run (at start, then hourly).

Each service is an ``async def serve(self, *, task_status)`` started by the
:class:`~._supervisor.Supervisor`. A crashed service is restarted with the same
streams: a service never closes the stream it reads (its owner, the daemon,
does), so a restart loses at most the item in hand, never the channel.
"""

from __future__ import annotations

import logging
import math
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import msgspec
import trio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from autopack.actors import _worktree as wt
from autopack.actors._scheduler import RunEnded

from . import _queries as q
from ._config import LiveSettings
from ._records import Records
from ._report import render_markdown
from ._store import Store

LOGGER = logging.getLogger(__name__)
HOURLY_S = 3600.0

__all__ = ["BasePinner", "ReportsWriter", "Retention", "RunEnded", "WorktreeSweeper",
           "open_run_ended_channel", "reconcile"]


def open_run_ended_channel() -> tuple[MemoryObjectSendStream[RunEnded],
                                      MemoryObjectReceiveStream[RunEnded]]:
    """The run-ended channel: unbounded, so the scheduler's post never waits."""
    return anyio.create_memory_object_stream[RunEnded](math.inf)


class ReportsWriter:
    """Writes ``reports/<run>.md`` and ``.json`` for every run that ended, then tells
    :class:`Retention` (``then``)."""

    def __init__(self, *, records: Records, reports_dir: Path,
                 build: Callable[[str], Awaitable[dict[str, object]]],
                 ended: MemoryObjectReceiveStream[RunEnded],
                 then: MemoryObjectSendStream[RunEnded] | None = None) -> None:
        self.records, self.reports_dir, self.build = records, reports_dir, build
        self.ended, self.then = ended, then

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for end in self.ended:
            try:
                await self.write(end.run_id)
            except Exception:
                LOGGER.exception("run %s: writing its report failed", end.run_id)
            if self.then is not None:
                self.then.send_nowait(end)

    async def write(self, run_id: str) -> Path:
        """Write the run's report; returns the Markdown file's path."""
        data = await self.build(run_id)
        base = self.reports_dir / run_id
        base.with_suffix(".json").write_bytes(msgspec.json.format(msgspec.json.encode(data)))
        md = base.with_suffix(".md")
        md.write_text(render_markdown(data), encoding="utf-8")
        await self.records.set_run_fields(run_id, report_path=str(md))
        await self.records.event(run_id, None, None, "report_written", path=str(md))
        return md


class Retention:
    """Deletes the branches and reports of runs that ended more than ``retention_days``
    ago (off unless set; live-reloadable). The run records and events stay."""

    def __init__(self, *, store: Store, live: LiveSettings, reports_dir: Path,
                 ended: MemoryObjectReceiveStream[RunEnded] | None = None,
                 interval_s: float = HOURLY_S) -> None:
        self.store, self.live, self.reports_dir = store, live, reports_dir
        self.ended, self.interval_s = ended, interval_s

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with anyio.move_on_after(self.interval_s):
                if self.ended is None:
                    await anyio.sleep_forever()
                else:
                    await self.ended.receive()
                    while True:  # a burst of ends is one pass
                        try:
                            self.ended.receive_nowait()
                        except anyio.WouldBlock:
                            break
            await self.apply()

    async def apply(self) -> int:
        """Prune what is due now; returns how many runs were pruned."""
        days = self.live.current.retention_days
        if not days:
            return 0
        cutoff = time.time() - days * 86400
        pruned = 0
        for run in await self.store.read(q.ended_runs_before, cutoff):
            if run["branch"] and wt.is_git_repo(run["repo"]):
                try:
                    await wt.git(run["repo"], "branch", "-D", "--quiet", run["branch"])
                except wt.GitError:
                    pass  # already gone (or never created)
            for suffix in (".md", ".json"):
                (self.reports_dir / f"{run['id']}{suffix}").unlink(missing_ok=True)
            await self.store.call(q.mark_pruned, run["id"], time.time())
            pruned += 1
        if pruned:
            LOGGER.info("retention: pruned branches and reports of %d run(s)", pruned)
        return pruned


class BasePinner:
    """Resolves submitted runs' base refs to commits soon after submit, so a run that
    waits in the queue still branches from what the repository was when it was
    submitted (a later commit in the user's checkout does not move it; the window is
    the 0.1 s gathering delay). A burst of submits against one repository costs one
    ``git rev-parse`` per 0.1 s, not one per run: the submit path stays fast."""

    def __init__(self, store: Store, *, gather_s: float = 0.1) -> None:
        self.store, self.gather_s = store, gather_s
        self._to_pin: list[tuple[str, str, str]] = []
        self._wanted = trio.Event()

    def want(self, run_id: str, repo: str, base: str) -> None:
        """Pin ``run_id``'s ``base`` in ``repo`` soon (called after the submit's commit)."""
        self._to_pin.append((run_id, repo, base))
        self._wanted.set()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wanted.wait()
            await trio.sleep(self.gather_s)  # a burst's runs share one rev-parse per repository
            self._wanted = trio.Event()
            batch, self._to_pin = self._to_pin, []
            await self._pin(batch)

    async def _pin(self, batch: list[tuple[str, str, str]]) -> None:
        resolved: dict[tuple[str, str], str | None] = {}
        pins = []
        for run_id, repo, base in batch:
            key = (repo, base)
            if key not in resolved:
                try:
                    resolved[key] = await wt.resolve_base(Path(repo), base)
                except wt.GitError:
                    resolved[key] = None  # the run actor reports a bad ref when it starts
            commit = resolved[key]
            if commit:
                pins.append((run_id, commit))
        if pins:
            await self.store.call(q.pin_base_commits, pins)


class WorktreeSweeper:
    """Removes worktrees, run environments and private /tmp dirs that belong to no live
    run (queued, running, interrupted) and whose run lock nobody holds."""

    def __init__(self, *, records: Records, state_dir: Path, interval_s: float = HOURLY_S) -> None:
        self.records, self.state_dir, self.interval_s = records, state_dir, interval_s

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()  # the daemon sweeps once itself before the scheduler starts
        while True:
            await anyio.sleep(self.interval_s)
            await self.sweep()

    async def sweep(self) -> None:
        live = set(await self.records.runs_in("queued", "running", "interrupted"))
        root = self.state_dir / "worktrees"
        lock_dir = self.state_dir / "locks"
        for path in sorted(root.iterdir()) if root.exists() else []:
            run_id = path.name
            if run_id == ".pool" or run_id in live or wt.lock_is_held(lock_dir, run_id):
                continue
            repo = None
            try:
                repo = (await self.records.run(run_id))["repo"]
            except q.UnknownRun:
                pass
            if repo and wt.is_git_repo(repo):
                await wt.remove_worktree(Path(repo), path)
            shutil.rmtree(path, ignore_errors=True)
            shutil.rmtree(self.state_dir / "envs" / run_id, ignore_errors=True)
            LOGGER.info("swept orphan worktree %s", path)
        scratch_root = self.state_dir / "tmp"  # runs' private /tmp (actors._sandbox.scratch_dir)
        for path in sorted(scratch_root.iterdir()) if scratch_root.exists() else []:
            if path.name not in live and not wt.lock_is_held(lock_dir, path.name):
                shutil.rmtree(path, ignore_errors=True)


async def reconcile(records: Records, state_dir: Path) -> None:
    """After a crash: kill the process groups and sandboxes a dead daemon of this state
    dir left running, and mark its running runs (their lock is free) interrupted."""
    from autopack.actors._proc import kill_group
    from autopack.actors._sandbox import reap_leftovers

    # sandboxes an earlier daemon of this state dir left (its watcher normally ends them)
    for pid in await trio.to_thread.run_sync(reap_leftovers, state_dir):
        LOGGER.warning("killed a leftover sandbox process %d of an earlier daemon", pid)
    for proc in await records.take_stale_processes():
        if proc["boot_id"] and proc["boot_id"] != records.boot_id:
            continue  # recorded before a reboot: the pgid may now be someone else's
        if kill_group(proc["pgid"], signal.SIGKILL):
            LOGGER.warning("killed leftover process group %d of run %s (%s)", proc["pgid"],
                           proc["run_id"], proc["command"])
            await records.event(proc["run_id"], None, None, "leftover_killed",
                                pgid=proc["pgid"], command=proc["command"])
    lock_dir = state_dir / "locks"
    for run_id in await records.runs_in("running"):
        if not wt.lock_is_held(lock_dir, run_id):
            await records.set_run_state(run_id, "interrupted", "daemon died while running")

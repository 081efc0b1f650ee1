"""RunActor: the shell of the run engine. Carries out one run in its own worktree.

Theory of operation
-------------------
Every rule of a run lives in :mod:`._engine` (pure). The actor feeds it events
and performs the one action it answers with, until the run ends:

* at start it replays the run's recorded events (``replay``): a run resumed
  after ``kill -9`` continues from the state its log describes; the attempt that
  was in flight was interrupted and does not count against ``max_attempts``;
* each event is written to the run's event log before the action it leads to
  is performed (the classification row carries the engine's decision); run and
  phase states change only through the store's calls, whose rows are events too;
* the attempt's I/O (Builder, checks, classifier, mitigations, Doctor, commit)
  is in :mod:`._steps`; the workspace (worktree, sandbox, install step) and the
  end (cleanup) are here.

The scheduler starts one actor per run inside a cancel scope it owns;
:meth:`RunActor.cancel` cancels the run (the running check's process group is
killed on the way out), a daemon shutdown cancels from outside and leaves the
run resumable. A phase committed on the branch but not recorded (killed in
between) is found by its ``Autopack-Phase`` trailer and recorded, never redone.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from autopack.protocol import PhaseSpec, RunSpec, SpecError, StorageError, validate_spec

from . import _engine as E
from . import _worktree as wt
from ._env import base_env, run_env_dir, with_venv
from ._failpoints import hit
from ._ports import PoolPort, RecordsPort, SandboxPort, SettingsPort
from ._proc import CommandResult, run_command
from ._states import TERMINAL_RUN_STATES
from ._steps import (
    AttemptSteps,
    Emitted,
    RunTools,
    RunWorkspace,
    excerpt,
    judge_test_count,
)

__all__ = ["RecordsPort", "RunActor", "RunServices", "RunTools", "RunWorkspace",
           "end_run_directly", "engine_limits", "excerpt", "judge_test_count"]

LOGGER = logging.getLogger(__name__)
INSTALL_TIMEOUT_S = 1800  # one install step (a cold install of a large project downloads a lot)
READY_MARK = ".autopack-ready"  # in the run's venv once its install step succeeded
ENDED = frozenset(s.value for s in TERMINAL_RUN_STATES)
# performed under the phase's and the run's wall-time limits (state records are not:
# a limit firing mid-write would leave a row the engine never saw)
_TIMED = (E.RunBuilder, E.RunCheck, E.Classify, E.Mitigate, E.AskDoctor, E.RunFix, E.Commit,
          E.EndAttempt)


class RunEnded(Exception):
    """Raised while preparing the workspace to fail the run with a named reason."""

    def __init__(self, state: str, reason: str) -> None:
        self.state, self.reason = state, reason
        super().__init__(f"{state}: {reason}")


@dataclass
class RunServices:
    """Everything a run actor talks to. Optional parts may be ``None`` (not configured)."""

    records: RecordsPort
    state_dir: Path
    settings: SettingsPort  # a frozen snapshot; a reload swaps it (take it once per decision)
    tools: RunTools = field(default_factory=RunTools)
    free_disk_mb: Callable[[Path], float] | None = None
    draining: bool = False  # set on shutdown: stop at the next phase boundary
    pool: PoolPort | None = None  # ready worktrees so runs start without a checkout
    spawn: Callable[..., None] | None = None  # start an owned background task (scheduler's)
    repo_locks: dict[str, anyio.Lock] = field(default_factory=dict)
    sandbox: SandboxPort | None = None  # every command of a run runs in its RunBox

    def repo_lock(self, repo: str) -> anyio.Lock:
        lock = self.repo_locks.get(repo)
        if lock is None:
            lock = self.repo_locks[repo] = anyio.Lock()
        return lock


def disk_free_mb(path: Path) -> float:
    usage = shutil.disk_usage(path)
    return usage.free / (1024 * 1024)


def engine_limits(spec: RunSpec) -> E.EngineLimits:
    """The engine's limits for ``spec``."""
    lim = spec.limits
    return E.EngineLimits(
        max_attempts=lim.max_attempts, wall_time_s=lim.wall_time_s,
        phase_wall_time_s=lim.phase_wall_time_s,
        doctor_calls_per_phase=lim.doctor_calls_per_phase,
        doctor_calls_per_run=lim.doctor_calls_per_run,
        output_limit_bytes=lim.check_output_limit_bytes)


def initial_state(spec: RunSpec) -> E.EngineState:
    return E.initial_state([(p.id, p.kind) for p in spec.phases], engine_limits(spec))


def rows_of(events: list[dict[str, Any]]) -> list[E.Record]:
    """Stored event rows as the engine's records."""
    return [(ev["kind"], ev["phase_id"], ev["attempt"], ev["payload"] or {}) for ev in events]


class RunActor:
    """Executes one run. ``await actor.execute()``; cancel its scope to cancel the run."""

    def __init__(self, run_id: str, services: RunServices) -> None:
        self.run_id = run_id
        self.s = services
        self.rec = services.records
        self._scope: anyio.CancelScope | None = None
        self._cancel_reason: str | None = None
        self._cancel_early = False
        self.state = E.EngineState()
        self._ready = False  # workspace prepared (worktree, sandbox, environment)
        self._started = time.time()  # the run's clock (wall_time_s), kept across restarts
        self._phase_deadline: float | None = None  # wall clock, for the phase in flight
        self._steps: AttemptSteps | None = None

    def cancel(self, reason: str = "cancelled by user") -> None:
        """Cancel the run: the running check's process group is killed, the run ends
        ``cancelled``. Safe to call before the run started executing."""
        self._cancel_reason = reason
        if self._scope is not None:
            self._scope.cancel()
        else:
            self._cancel_early = True

    # -------------------------------------------------------------- entry point
    async def execute(self) -> str:
        """Run to an end state; returns it. Raises ``RunLocked`` if another process holds the run."""
        lock = wt.acquire_run_lock(self.s.state_dir / "locks", self.run_id)
        try:
            hit("run.execute")
            return await self._execute_locked()
        finally:
            lock.release()

    async def _execute_locked(self) -> str:
        run = await self.rec.run(self.run_id)
        if run["state"] in ENDED:
            return str(run["state"])
        try:
            # the same validation as at submit: a spec stored by an older version that
            # no longer passes ends the run with the reason instead of crashing the actor
            spec = validate_spec(_loads(run["spec"]))
        except (SpecError, ValueError) as exc:
            why = f"stored run spec is invalid: {exc}"
            LOGGER.error("run %s: %s", self.run_id, why)
            await end_run_directly(self.rec, self.run_id, "failed", why)
            return "failed"
        ws = RunWorkspace(
            run_id=self.run_id, spec=spec, repo=Path(run["repo"]),
            worktree=self.s.state_dir / "worktrees" / self.run_id,
            venv=run_env_dir(self.s.state_dir, self.run_id),
            base_sha=run.get("base_commit") or "", arm=run.get("arm") or "hardened",
        )
        if run.get("started_at"):  # a resumed run keeps its clock: downtime counts too
            self._started = float(run["started_at"])
        # recovery: the state the run's log describes (a fresh run: its submitted state)
        self.state = E.replay(initial_state(spec),
                              rows_of(await self.rec.all_events(self.run_id)))
        self._steps = AttemptSteps(run_id=self.run_id, records=self.rec, settings=lambda: self.s.settings,
                                   tools=self.s.tools, ws=ws, time_left=self._time_left)
        opened = E.Opened(now=time.time(), fresh=run["state"] == "queued")
        pending: E.Event | None = None
        end: E.Action | None = None
        with anyio.CancelScope() as self._scope:
            if self._cancel_early:
                self._scope.cancel()
            try:
                end = await self._drive(ws, opened)
            except wt.GitError as exc:  # git refused (a corrupt index, an unreadable .git)
                LOGGER.warning("run %s failed: %s", self.run_id, exc)
                pending = E.Fatal(reason=str(exc))
            except Exception as exc:  # a bug or an environment failure: the run fails, the daemon lives
                LOGGER.exception("run %s failed with an internal error", self.run_id)
                pending = E.Fatal(reason=f"internal error: {type(exc).__name__}: {exc}")
        if self._scope.cancel_called:
            pending = E.Cancel(reason=self._cancel_reason or "cancelled")
        # daemon shutdown cancels from outside and skips this: the run stays resumable
        with anyio.CancelScope(shield=True):
            try:
                if pending is not None or end is None:
                    end = await self._close(pending or E.Fatal(reason="internal error"))
            finally:
                if not isinstance(end, E.Stopped):  # even when the end cannot be recorded
                    await self._cleanup(ws)
        if isinstance(end, E.Finished):
            return end.state
        return "interrupted"

    # -------------------------------------------------------------- the engine loop
    async def _drive(self, ws: RunWorkspace, first: E.Event) -> E.Action:
        action = await self._feed([Emitted(first, {})])
        while not isinstance(action, E.Finished | E.Stopped):
            action = await self._feed(await self._perform(ws, action))
        return action

    async def _close(self, event: E.Event) -> E.Action:
        """End the run after ``event`` (a cancel, a failure): only records are left to do."""
        action = await self._feed([Emitted(event, {})])
        while not isinstance(action, E.Finished | E.Stopped):
            match action:
                case E.SetRunState() | E.SetPhaseState():
                    action = await self._feed([await self._record_state(action)])
                case _:
                    raise AssertionError(f"run {self.run_id}: {action!r} after the run's end")
        return action

    async def _feed(self, emitted: list[Emitted]) -> E.Action:
        """Step the engine through ``emitted``, recording each event (with the engine's
        decision, for a classification) before anything else happens."""
        action: E.Action = E.Stopped()
        for em in emitted:
            self.state, actions = E.step(self.state, em.event)
            action = actions[0]
            if em.extra is not None:
                await self._record(em)
        return action

    async def _record(self, em: Emitted) -> None:
        kind, phase_id, attempt, payload = E.to_record(em.event)
        payload = {**em.extra, **payload} if em.extra else dict(payload)
        payload.pop("attempt", None)  # the row's own column
        if phase_id is not None:
            p = next(p for p in self.state.phases if p.id == phase_id)
            attempt = attempt if attempt is not None else (p.attempts or None)
            if kind == "classified":
                payload.update(decision=p.decision, reason=p.decision_reason,
                               doctor_avoidable=p.avoidable)
        await self.rec.event(self.run_id, phase_id, attempt, kind, **payload)

    async def _perform(self, ws: RunWorkspace, action: E.Action) -> list[Emitted]:
        if isinstance(action, E.SetRunState):
            return [await self._record_state(action, ws)]
        if isinstance(action, E.SetPhaseState) and action.to != "running":
            return [await self._record_state(action)]
        try:
            if not self._ready:
                await self._prepare(ws)
            if isinstance(action, E.SetPhaseState):  # entering a phase
                if self.s.draining:
                    return [Emitted(E.Drained(), {})]
                self._check_disk()
                limit = ws.spec.limits.phase_wall_time_s
                self._phase_deadline = time.time() + limit if limit else None
                return [await self._record_state(action)]
        except RunEnded as ended:
            return [Emitted(E.Fatal(reason=ended.reason), {})]
        if isinstance(action, _TIMED):
            return await self._timed(ws, action)
        return await self._attempt_step(ws, action)

    async def _timed(self, ws: RunWorkspace, action: E.Action) -> list[Emitted]:
        """``action`` under the run's and the phase's wall-time limits."""
        now = time.time()
        run_end = self._started + ws.spec.limits.wall_time_s
        end = min(run_end, self._phase_deadline or run_end)
        out: list[Emitted] = []
        with anyio.move_on_after(max(end - now, 0.0)) as scope:
            out = await self._attempt_step(ws, action)
        if scope.cancelled_caught:
            idx = getattr(action, "idx", None)
            phase = ws.spec.phases[idx].id if isinstance(idx, int) else None
            which = "phase" if self._phase_deadline is not None and \
                self._phase_deadline < run_end else "run"
            return [Emitted(E.TimedOut(scope=which, phase=phase), {})]
        return out

    async def _attempt_step(self, ws: RunWorkspace, action: E.Action) -> list[Emitted]:
        steps = self._steps
        assert steps is not None
        idx = getattr(action, "idx", 0)
        phase: PhaseSpec = ws.spec.phases[idx]
        match action:
            case E.FindCommit():
                sha = await wt.committed_phase(ws.worktree, ws.base_sha, self.run_id, phase.id)
                return [Emitted(E.CommitFound(phase=phase.id, sha=sha), {})]
            case E.BeginAttempt():
                n = await self.rec.begin_attempt(self.run_id, idx)
                return [Emitted(E.AttemptStarted(phase=phase.id, attempt=n))]
            case E.RunBuilder():
                return await steps.builder(phase, action)
            case E.RunCheck():
                return await steps.check(phase, action)
            case E.Classify():
                return await steps.classify(phase, action)
            case E.Mitigate():
                return await steps.mitigate(phase, action, self.state.phases[idx].done_actions)
            case E.CountDoctorCall():
                return await steps.count_doctor(phase, action)
            case E.AskDoctor():
                return await steps.doctor(phase, action)
            case E.RunFix():
                return await steps.fix(phase, action)
            case E.CreditAvoided():
                return [Emitted(E.AvoidedCredited(phase=phase.id, pattern=action.pattern,
                                                  tokens_avoided=action.tokens), {})]
            case E.Commit():
                return await steps.commit(phase, action)
            case E.EndAttempt():
                return await steps.end_attempt(phase, action)
        raise AssertionError(f"run {self.run_id}: no shell for {action!r}")

    async def _record_state(self, action: E.SetRunState | E.SetPhaseState,
                            ws: RunWorkspace | None = None) -> Emitted:
        """Record a run or phase state (its row is the engine's event)."""
        if isinstance(action, E.SetRunState):
            extra: dict[str, Any] = {}
            if action.to == "running":
                extra["at"] = time.time()
            if action.to == "succeeded" and ws is not None:
                with contextlib.suppress(wt.GitError):
                    head = await wt.git(ws.worktree, "rev-parse", "HEAD")
                    await self.rec.set_run_fields(self.run_id, final_commit=head)
            await self.rec.set_run_state(self.run_id, action.to, action.reason, **extra)
            return Emitted(E.RunStateChanged(to=action.to, reason=action.reason,
                                             at=extra.get("at")))
        notes: dict[str, Any] = {}
        if action.to == "running":
            notes["resumed"] = action.resumed
        if action.recovered:
            notes["recovered"] = True
        await self.rec.set_phase_state(self.run_id, action.idx, action.to, reason=action.reason,
                                       commit=action.commit, **notes)
        if action.to != "running":
            self._phase_deadline = None
        return Emitted(E.PhaseStateChanged(phase=self.state.phases[action.idx].id, to=action.to,
                                           reason=action.reason, commit=action.commit))

    # -------------------------------------------------------------- the workspace
    async def _prepare(self, ws: RunWorkspace) -> None:
        """Worktree, sandbox and environment, once per actor, before the first phase step.
        Raises :class:`RunEnded` when the run cannot go on."""
        self._ready = True
        self._check_disk()
        if not wt.is_git_repo(ws.repo):
            raise RunEnded("failed", f"{ws.repo} is not a git repository")
        if not ws.base_sha:
            try:
                ws.base_sha = await wt.resolve_base(ws.repo, ws.spec.base)
            except wt.GitError:
                raise RunEnded("failed", f"base ref {ws.spec.base!r} not found in {ws.repo}") from None
            await self.rec.set_run_fields(self.run_id, base_commit=ws.base_sha)
        fresh = self.state.fresh
        lock = self.s.repo_lock(str(ws.repo))
        branch = f"autopack/{self.run_id}"
        pooled = fresh and self.s.pool is not None and await self.s.pool.take(
            ws.repo, ws.base_sha, ws.worktree, branch, lock)
        reused = False
        if not pooled:
            reused = await wt.ensure_worktree(ws.repo, ws.worktree, branch, ws.base_sha,
                                              lock=lock, fresh=fresh)
        await self.rec.event(self.run_id, None, None, "worktree_ready", path=str(ws.worktree),
                             reused=reused, pooled=pooled, base=ws.base_sha)
        self._refill_pool(ws)
        ws.env = base_env()
        await self._confine(ws)
        if any(p.state not in ("succeeded", "skipped") for p in self.state.phases):
            await self._prepare_env(ws)

    def _time_left(self) -> float:
        wall = self._steps.ws.spec.limits.wall_time_s if self._steps else 0.0
        return max(wall - (time.time() - self._started), 0.1)

    async def _confine(self, ws: RunWorkspace) -> None:
        """Build the run's sandbox (:mod:`._sandbox`); refuse build phases without one."""
        sandbox = self.s.sandbox
        if sandbox is None:
            return
        mode = sandbox.mode
        if mode == "unavailable":
            if any(p.kind == "build" for p in ws.spec.phases):
                raise RunEnded("failed", "build phases need the sandbox and it is unavailable "
                                         f"({sandbox.probe.detail}); install bubblewrap, or set "
                                         "sandbox = \"off\" to run unconfined")
            await self.rec.event(self.run_id, None, None, "sandbox", mode=mode,
                                 detail=sandbox.probe.detail, confined=False)
            return
        from ._sandbox import scratch_dir

        ws.scratch = scratch_dir(self.s.state_dir, self.run_id)
        await anyio.Path(ws.scratch).mkdir(parents=True, exist_ok=True)
        gitdirs = await wt.git_dirs(ws.worktree)
        # <state>/cache: the install step's download caches (uv, pip), shared by runs
        ws.box = sandbox.box(worktree=ws.worktree, scratch=ws.scratch, writable=[ws.venv],
                             readonly=gitdirs, install_writable=[self.s.state_dir / "cache"],
                             network=ws.spec.network)
        await self.rec.event(self.run_id, None, None, "sandbox", mode=mode,
                             detail=sandbox.probe.detail, network=ws.box.network,
                             confined=mode == "bwrap")

    # -------------------------------------------------------------- the environment
    async def _prepare_env(self, ws: RunWorkspace) -> None:
        """The install step, once per run before the first check (see :mod:`._install`).

        A ready copy of the environment is reused when the install inputs did not change;
        a failed step ends the run with its output classified like a check's.
        """
        from ._env import env_cache_dir
        from ._install import EnvCache, cache_key, plan_install, uv_binary
        from ._toolchain import detect

        ready = ws.venv / READY_MARK
        if await anyio.Path(ready).exists():  # a resumed run: its environment is ready
            ws.env = with_venv(ws.env, ws.venv)
            return
        started = time.monotonic()
        detection = await anyio.to_thread.run_sync(detect, ws.cwd)
        plan = plan_install(detection, ws.spec.setup, uv=uv_binary())
        if not plan.venv and not plan.steps:
            if await anyio.Path(ws.venv).exists():  # made lazily by an earlier attempt
                await ws.activate_venv()
            return  # nothing to install (no Python, no Node): the system's tools
        cache = EnvCache(env_cache_dir(self.s.state_dir))
        key, reused = None, False
        if plan.venv:
            from ._env import system_python

            key = await anyio.to_thread.run_sync(cache_key, ws.cwd, plan, system_python())
            if await anyio.to_thread.run_sync(cache.has, key):
                reused = await anyio.to_thread.run_sync(cache.clone, key, ws.venv, ws.worktree)
            if not reused:
                await anyio.to_thread.run_sync(shutil.rmtree, ws.venv, True)
                await ws.activate_venv()
        ws.env = with_venv(ws.env, ws.venv) if plan.venv else ws.env
        node_key, node_reused = await self._node_from_cache(ws, plan, cache)
        steps = ([] if reused else plan.venv_steps) + [
            s for s in plan.steps if not (node_reused and plan.node and s == plan.node.step)]
        all_reused = (reused or not plan.venv) and (node_reused or plan.node is None) \
            and not steps
        await self.rec.event(self.run_id, None, None, "install_started", source=plan.source,
                             installer=plan.installer, reused=all_reused, key=key or node_key,
                             node_key=node_key, node_reused=node_reused, steps=steps,
                             inputs=plan.inputs, env=str(ws.venv) if plan.venv else None)
        for step in steps:
            await self._install_step(ws, step)
        if plan.venv:
            await _drop_build_leftovers(ws.worktree)
            await anyio.Path(ready).unlink(missing_ok=True)  # a clone's is the entry's file
            await anyio.Path(ready).write_text(key or "")
            if key and not reused:
                await anyio.to_thread.run_sync(cache.store, key, ws.venv, ws.worktree)
        if node_key and not node_reused and plan.node is not None:
            modules = ws.cwd / plan.node.modules
            modules.mkdir(parents=True, exist_ok=True)  # a package without dependencies
            await anyio.to_thread.run_sync(cache.store, node_key, modules, ws.worktree)
        await self.rec.event(self.run_id, None, None, "env_ready", reused=all_reused,
                             seconds=round(time.monotonic() - started, 3))

    async def _node_from_cache(self, ws: RunWorkspace, plan: Any, cache: Any) -> tuple[
            str | None, bool]:
        """The ready ``node_modules`` for the detected Node install, cloned into the
        worktree when its key (package.json, lockfile, command, versions) is kept."""
        from ._install import node_cache_key

        if plan.node is None or ws.spec.setup is not None:
            return None, False
        key = await anyio.to_thread.run_sync(node_cache_key, ws.cwd, plan.node, ws.env)
        if key is None or not await anyio.to_thread.run_sync(cache.has, key):
            return key, False
        clone = functools.partial(cache.clone, key, ws.cwd / plan.node.modules, ws.worktree,
                                  rewrite=False)
        return key, await anyio.to_thread.run_sync(clone)

    async def _install_step(self, ws: RunWorkspace, command: str) -> None:
        from ._install import install_env

        async def on_start(pgid: int) -> None:
            await self.rec.add_process(pgid, self.run_id, command)

        async def on_end(pgid: int) -> None:
            await self.rec.remove_process(pgid)

        limits = ws.spec.limits
        result = await run_command(
            command, cwd=ws.cwd, env=install_env(ws.env, ws.venv, self.s.state_dir),
            timeout_s=min(INSTALL_TIMEOUT_S, self._time_left()),
            max_output=limits.max_output_bytes, output_limit=limits.check_output_limit_bytes,
            on_start=on_start, on_end=on_end, box=ws.box, step="install")
        await self.rec.event(self.run_id, None, None, "install_finished", command=command,
                             exit_code=result.exit_code, duration_s=result.duration_s,
                             timed_out=result.timed_out, excerpt=excerpt(result.output))
        if result.ok:
            return
        pattern, evidence = await self._classify_install(ws, result)
        raise RunEnded("failed", f"install step failed: {pattern or 'unclassified'} "
                                 f"(`{command}` exit {result.exit_code}): {evidence}")

    async def _classify_install(self, ws: RunWorkspace, result: CommandResult) -> tuple[
            str | None, str]:
        from autopack.protocol import ClassifyContext

        classify = self.s.tools.classify
        last = [ln.strip() for ln in result.output.strip().splitlines() if ln.strip()][-1:]
        if classify is None:
            return None, last[0][:200] if last else ""
        await ws.describe()
        c = await classify(result.output, result.exit_code, ClassifyContext(
            command=result.command, repo_root=str(ws.worktree), toolchain=ws.toolchain,
            repo_modules=ws.repo_modules, lockfile_manager=ws.node_manager))
        import msgspec

        await self.rec.event(self.run_id, None, None, "classified", pattern=c.pattern,
                             evidence=c.evidence, details=c.details, command=result.command,
                             exit_code=result.exit_code, stage="install",
                             mitigation=msgspec.to_builtins(c.mitigation) if c.mitigation
                             else None, tokens_avoided=0, decision="fail",
                             reason="install step failed")
        evidence = "; ".join(c.evidence) if c.evidence else (last[0] if last else "")
        return c.pattern, evidence[:300]

    # -------------------------------------------------------------- limits
    def _check_disk(self) -> None:
        need = float(getattr(self.s.settings, "min_free_disk_mb", 0) or 0)
        if need <= 0:
            return
        free = (self.s.free_disk_mb or disk_free_mb)(self.s.state_dir)
        if free < need:
            raise RunEnded("failed", f"not enough free disk: {free:.0f} MB free in "
                                     f"{self.s.state_dir}, {need:.0f} MB required (min_free_disk_mb)")

    # -------------------------------------------------------------- the end
    async def _cleanup(self, ws: RunWorkspace) -> None:
        lock = self.s.repo_lock(str(ws.repo))
        pool = self.s.pool
        recycled = False
        try:
            if (pool is not None and ws.base_sha and pool.wants(ws.repo)
                    and await anyio.Path(ws.worktree / ".git").exists()):
                # back into the pool: a few files reset instead of the whole tree rewritten
                recycled = await pool.recycle(ws.repo, ws.worktree, ws.base_sha, lock)
            else:
                if pool is not None:
                    pool.released(ws.repo)
                async with lock:
                    await wt.remove_worktree(ws.repo, ws.worktree)
        except (OSError, wt.GitError) as exc:
            LOGGER.warning("run %s: cannot remove worktree %s: %s", self.run_id, ws.worktree, exc)
        for path in (ws.venv, ws.scratch):
            if path is not None and path.exists():
                await anyio.to_thread.run_sync(shutil.rmtree, path, True)
        self._refill_pool(ws)
        with contextlib.suppress(StorageError):  # a note only; the disk may be full
            await self.rec.event(self.run_id, None, None, "worktree_removed",
                                 path=str(ws.worktree), recycled=recycled)

    def _refill_pool(self, ws: RunWorkspace) -> None:
        """Ready the next run's worktree in the background (a no-op when one is ready)."""
        if self.s.pool is not None and self.s.spawn is not None and ws.base_sha:
            self.s.spawn(self.s.pool.refill, ws.repo, ws.base_sha, self.s.repo_lock(str(ws.repo)))


async def _drop_build_leftovers(worktree: Path) -> None:
    """Remove the ``*.egg-info`` directories an editable install leaves in the worktree
    (untracked, not ignored): they are build output, not the run's change."""
    done = await wt.git_process(worktree, "status", "--porcelain=v1", "-z",
                                "--untracked-files=normal")
    for entry in done.stdout.decode("utf-8", "surrogateescape").split("\0"):
        path = entry[3:].rstrip("/")
        if entry.startswith("?? ") and path.endswith(".egg-info"):
            await anyio.to_thread.run_sync(shutil.rmtree, worktree / path, True)



async def end_run_directly(records: RecordsPort, run_id: str, state: str, reason: str) -> None:
    """End a run that no actor is executing (cancelled while queued, a spec that cannot
    load, an actor that keeps crashing): its open phases end too, then the run."""
    run = await records.run(run_id)
    if run["state"] in ENDED:
        return
    for prow in run["phases"]:
        if prow["state"] == "running":
            await records.set_phase_state(run_id, prow["idx"],
                                          "cancelled" if state == "cancelled" else "failed",
                                          reason=reason)
        elif prow["state"] == "queued":
            await records.set_phase_state(run_id, prow["idx"], "cancelled",
                                          reason=f"run {state} before this phase")
    await records.set_run_state(run_id, state, reason)


def _loads(text: str) -> Any:
    import msgspec

    return msgspec.json.decode(text)

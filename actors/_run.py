"""RunActor: carries out one run, phase by phase, in its own worktree.

Theory of operation
-------------------
The scheduler starts one :class:`RunActor` per run inside a cancel scope it
owns; cancelling that scope cancels the run (the running check's process group
is killed by ``run_command`` on the way out). Every step that a person could
observe is written through ``records`` before the actor moves on, so a daemon
killed at any instant resumes from the last completed phase:

* a phase commit carries an ``Autopack-Phase`` trailer, so a phase committed
  on the branch but not yet recorded (killed in between) is recorded on resume
  instead of being done twice;
* the in-flight phase starts a new attempt (the attempt counter is durable);
* the worktree is re-attached from the branch, or recreated.

Decisions about a failed check (classify, mitigate, ask the Doctor, retry,
give up) are taken by :mod:`._policy` (pure); this module only does the I/O.
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

from . import _worktree as wt
from ._env import base_env, ensure_venv, run_env_dir, with_venv
from ._failpoints import hit
from ._ports import PoolPort, RecordsPort, SandboxPort, SettingsPort
from ._proc import CommandResult, run_command

LOGGER = logging.getLogger(__name__)
EXCERPT_BYTES = 4000
INSTALL_TIMEOUT_S = 1800  # one install step (a cold install of a large project downloads a lot)
READY_MARK = ".autopack-ready"  # in the run's venv once its install step succeeded


class Drained(Exception):
    """Raised at a phase boundary when the daemon is stopping: the run stays resumable."""


class PhaseEnded(Exception):
    """Raised inside a phase to end it (failed) with a named reason; the run then fails."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class RunEnded(Exception):
    """Raised inside the actor to end the run with a state and a named reason."""

    def __init__(self, state: str, reason: str) -> None:
        self.state, self.reason = state, reason
        super().__init__(f"{state}: {reason}")


@dataclass
class RunServices:
    """Everything a run actor talks to. Optional parts may be ``None`` (not configured)."""

    records: RecordsPort
    state_dir: Path
    settings: SettingsPort  # a frozen snapshot; a reload swaps it (take it once per decision)
    phase_runner: Any  # the attempt loop: Builder, checks, failure policy (``_phase.PhaseRunner``)
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


@dataclass
class RunWorkspace:
    """The run's working state, shared with the phase runner."""

    run_id: str
    spec: RunSpec
    repo: Path
    worktree: Path
    venv: Path
    base_sha: str = ""
    arm: str = "hardened"
    env: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    toolchain: str | None = None
    repo_modules: list[str] = field(default_factory=list)
    node_manager: str | None = None
    intention_recorded: bool = False
    described: bool = False
    doctor_calls: int = 0  # in this run so far (durable: counted in the phases table)
    box: Any = None  # _sandbox.RunBox: the confinement every command of the run gets
    scratch: Path | None = None  # the run's private /tmp (host side)

    async def activate_venv(self) -> Path:
        python = await ensure_venv(self.venv)
        self.env = with_venv(self.env, self.venv)
        return python

    async def describe(self) -> None:
        """What the classifier may know of the repository (toolchain, own module names).

        Read once, lazily (only a failure needs it), in a thread: on a large
        repository it takes tens of milliseconds of file reads."""
        if self.described:
            return
        self.described = True
        from ._toolchain import detect_toolchains, repo_modules

        def read() -> tuple[list[Any], list[str]]:
            return detect_toolchains(self.worktree), repo_modules(self.worktree)

        try:
            tcs, self.repo_modules = await anyio.to_thread.run_sync(read)
        except OSError:
            return
        if tcs:
            self.toolchain = tcs[0].name
        self.node_manager = next((tc.manager for tc in tcs if tc.name == "node"), None)

    @property
    def cwd(self) -> Path:
        """The phases' working directory: the worktree, or the spec's ``workdir`` in it."""
        return self.worktree / self.spec.workdir if self.spec.workdir else self.worktree

    @property
    def venv_active(self) -> bool:
        return self.env.get("VIRTUAL_ENV") == str(self.venv)


class RunActor:
    """Executes one run. ``await actor.execute()``; cancel its scope to cancel the run."""

    def __init__(self, run_id: str, services: RunServices) -> None:
        self.run_id = run_id
        self.s = services
        self.rec = services.records
        self._scope: anyio.CancelScope | None = None
        self._cancel_reason: str | None = None
        self._cancel_early = False

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
        """Run to an end state; returns it. Raises ``wt.RunLocked`` if another process holds the run."""
        lock = wt.acquire_run_lock(self.s.state_dir / "locks", self.run_id)
        try:
            hit("run.execute")
            return await self._execute_locked()
        finally:
            lock.release()

    async def _execute_locked(self) -> str:
        run = await self.rec.run(self.run_id)
        if run["state"] in ("succeeded", "failed", "cancelled"):
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
        if run.get("started_at"):
            # a resumed run keeps its clock: restarts (and downtime) count toward wall_time_s
            ws.started = time.monotonic() - max(0.0, time.time() - float(run["started_at"]))
        resumed = run["state"] in ("interrupted", "running")
        await self.rec.set_run_state(self.run_id, "running",
                                     "resumed after restart" if resumed else None)
        end_state: str = "failed"
        reason: str | None = "internal error"
        with anyio.CancelScope() as self._scope:
            if self._cancel_early:
                self._scope.cancel()
            try:
                end_state, reason = await self._run_phases(ws, run)
            except RunEnded as ended:
                end_state, reason = ended.state, ended.reason
            except Drained:
                with anyio.CancelScope(shield=True):
                    await self.rec.set_run_state(self.run_id, "interrupted", "daemon stopping")
                return "interrupted"
            except wt.GitError as exc:  # git refused (a corrupt index, an unreadable .git)
                LOGGER.warning("run %s failed: %s", self.run_id, exc)
                end_state, reason = "failed", str(exc)
            except Exception as exc:  # a bug or an environment failure: the run fails, the daemon lives
                LOGGER.exception("run %s failed with an internal error", self.run_id)
                end_state, reason = "failed", f"internal error: {type(exc).__name__}: {exc}"
        if self._scope.cancel_called:
            end_state, reason = "cancelled", self._cancel_reason or "cancelled"
        # daemon shutdown cancels from outside and skips this: the run stays resumable
        with anyio.CancelScope(shield=True):
            await self._finish(ws, end_state, reason)
        return end_state

    async def _run_phases(self, ws: RunWorkspace, run: dict[str, Any]) -> tuple[str, str | None]:
        self._check_disk()
        if not wt.is_git_repo(ws.repo):
            raise RunEnded("failed", f"{ws.repo} is not a git repository")
        if not ws.base_sha:
            try:
                ws.base_sha = await wt.resolve_base(ws.repo, ws.spec.base)
            except wt.GitError:
                raise RunEnded("failed", f"base ref {ws.spec.base!r} not found in {ws.repo}") from None
            await self.rec.set_run_fields(self.run_id, base_commit=ws.base_sha)
        fresh = run["state"] == "queued"
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
        if any(p["state"] not in ("succeeded", "skipped") for p in run["phases"]):
            await self._prepare_env(ws)
        for idx, phase in enumerate(ws.spec.phases):
            prow = run["phases"][idx]
            if prow["state"] in ("succeeded", "skipped"):
                continue
            if prow["state"] in ("failed", "cancelled"):
                return prow["state"], prow["reason"]
            # only a resumed run can have a phase committed but not recorded
            sha = None if fresh else await wt.committed_phase(ws.worktree, ws.base_sha,
                                                               self.run_id, phase.id)
            if sha is not None:
                # killed between the commit and its record: record it, never redo it
                if prow["state"] == "queued":
                    await self.rec.set_phase_state(self.run_id, idx, "running")
                await self.rec.set_phase_state(self.run_id, idx, "succeeded", commit=sha,
                                               recovered=True)
                continue
            if self.s.draining:
                raise Drained()
            self._check_limits(ws)
            self._check_disk()
            await self.rec.set_phase_state(self.run_id, idx, "running",
                                           resumed=prow["state"] == "running")
            outcome, reason, commit = await self._limited_phase(ws, idx, phase)
            await self.rec.set_phase_state(self.run_id, idx, outcome, reason=reason, commit=commit)
            if outcome == "failed":
                return "failed", f"phase {phase.id}: {reason}"
        return "succeeded", None

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
            timeout_s=min(INSTALL_TIMEOUT_S, self._run_time_left(ws)),
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

        classify = getattr(self.s.phase_runner, "classify", None)
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

    # -------------------------------------------------------------- one phase
    async def _limited_phase(self, ws: RunWorkspace, idx: int,
                             phase: PhaseSpec) -> tuple[str, str | None, str | None]:
        """The phase under its wall-time limit (and the run's); limits end it with a reason."""
        limit = ws.spec.limits.phase_wall_time_s
        budget = min(limit if limit else float("inf"), self._run_time_left(ws))
        with anyio.move_on_after(budget) as scope:
            try:
                return await self._run_phase(ws, idx, phase)
            except PhaseEnded as ended:
                return "failed", ended.reason, None
        if scope.cancelled_caught:
            if limit and budget == limit:
                return "failed", f"phase wall time limit of {limit:g} s reached", None
            raise RunEnded("failed", f"wall time limit of {ws.spec.limits.wall_time_s:g} s reached")
        raise AssertionError("unreachable")

    async def _run_phase(self, ws: RunWorkspace, idx: int,
                         phase: PhaseSpec) -> tuple[str, str | None, str | None]:
        """Attempts until success or a limit; returns (state, reason, commit)."""
        result: tuple[str, str | None, str | None] = await self.s.phase_runner.run_phase(
            self, ws, idx, phase)
        return result

    async def checks_for(self, ws: RunWorkspace, idx: int, phase: PhaseSpec,
                         attempt: int) -> list[str]:
        """The phase's checks, or the toolchain's defaults when it lists none."""
        if phase.checks:
            return list(phase.checks)
        from ._toolchain import default_checks

        checks, reasons = await anyio.to_thread.run_sync(default_checks, ws.cwd)
        await self.rec.event(self.run_id, phase.id, attempt, "checks_detected", checks=checks,
                             reasons=reasons)
        if not checks:
            raise RunEnded("failed", f"phase {phase.id}: no checks given and none detected")
        return checks

    async def run_checks(self, ws: RunWorkspace, idx: int, phase: PhaseSpec, attempt: int,
                         checks: list[str]) -> CommandResult | None:
        """Run checks in order; return the first failing result, or ``None`` if all passed."""
        for command in checks:
            self._check_limits(ws)
            result = await self.run_one(ws, phase, attempt, command)
            if not result.ok:
                return result
        return None

    async def run_one(self, ws: RunWorkspace, phase: PhaseSpec, attempt: int,
                      command: str) -> CommandResult:
        await self.rec.event(self.run_id, phase.id, attempt, "check_started", command=command)
        limits = ws.spec.limits
        timeout = min(phase.timeout_s, self._run_time_left(ws))

        async def on_start(pgid: int) -> None:
            await self.rec.add_process(pgid, self.run_id, command)

        async def on_end(pgid: int) -> None:
            await self.rec.remove_process(pgid)

        result = await run_command(command, cwd=ws.cwd, env=ws.env, timeout_s=timeout,
                                   max_output=limits.max_output_bytes,
                                   output_limit=limits.check_output_limit_bytes,
                                   on_start=on_start, on_end=on_end, box=ws.box)
        # regexes over up to max_output_bytes (16 MiB) of output: off the event loop, so
        # /healthz and every other request keep answering while a loud check ends
        result, tests = await anyio.to_thread.run_sync(
            lambda: judge_test_count(result, allow_no_tests=phase.allow_no_tests))
        await self.rec.event(
            self.run_id, phase.id, attempt, "check_finished", command=command,
            exit_code=result.exit_code, duration_s=result.duration_s, timed_out=result.timed_out,
            truncated=result.truncated, output_bytes=result.output_bytes,
            output_limited=result.output_limited, tests=tests, no_tests=result.no_tests,
            excerpt=excerpt(result.output),
        )
        if result.output_limited:
            raise PhaseEnded(f"output limit: `{command}` printed more than "
                             f"{limits.check_output_limit_bytes} bytes and was stopped")
        if result.timed_out and self._run_time_left(ws) <= 0.2:
            raise RunEnded("failed", f"wall time limit of {limits.wall_time_s:g} s reached")
        return result

    async def budget(self, ws: RunWorkspace, phase: PhaseSpec) -> Any:
        """The phase's and run's budget (tokens and USD), charged with what the database says
        was already spent, so budgets hold across attempts, phases and restarts."""
        from ._budget import Budget

        spent = await self.rec.spend(self.run_id, phase.id)
        limits = ws.spec.limits
        return Budget(token_limit=limits.token_budget, usd_limit=limits.usd_budget,
                      phase_token_limit=getattr(limits, "phase_token_budget", None),
                      phase_usd_limit=getattr(limits, "phase_usd_budget", None),
                      prices=getattr(self.s.settings, "prices", {}) or {},
                      tokens_used=spent["run_tokens"], pusd_used=spent["run_pusd"],
                      phase_tokens_used=spent["phase_tokens"], phase_pusd_used=spent["phase_pusd"])

    async def record_usage(self, phase: PhaseSpec, attempt: int, usage: Any) -> None:
        await self.rec.record_llm_call(
            self.run_id, phase.id, attempt, usage.role, usage.model,
            {"input": usage.input_tokens, "output": usage.output_tokens,
             "cache_creation": usage.cache_creation_input_tokens,
             "cache_read": usage.cache_read_input_tokens},
            cost_pusd=getattr(usage, "cost_pusd", None))

    async def commit(self, ws: RunWorkspace, phase: PhaseSpec) -> str | None:
        return await wt.commit_phase(ws.worktree, self.run_id, phase.id, phase.goal)

    # -------------------------------------------------------------- limits
    def _run_time_left(self, ws: RunWorkspace) -> float:
        return max(ws.spec.limits.wall_time_s - (time.monotonic() - ws.started), 0.1)

    def _check_limits(self, ws: RunWorkspace) -> None:
        if time.monotonic() - ws.started > ws.spec.limits.wall_time_s:
            raise RunEnded("failed", f"wall time limit of {ws.spec.limits.wall_time_s:g} s reached")

    def _check_disk(self) -> None:
        need = float(getattr(self.s.settings, "min_free_disk_mb", 0) or 0)
        if need <= 0:
            return
        free = (self.s.free_disk_mb or disk_free_mb)(self.s.state_dir)
        if free < need:
            raise RunEnded("failed", f"not enough free disk: {free:.0f} MB free in "
                                     f"{self.s.state_dir}, {need:.0f} MB required (min_free_disk_mb)")

    # -------------------------------------------------------------- endings
    async def _finish(self, ws: RunWorkspace, state: str, reason: str | None) -> None:
        try:
            await self._record_end(ws, state, reason)
        finally:  # even when the end cannot be recorded (full disk): free the disk it holds
            await self._cleanup(ws)

    async def _record_end(self, ws: RunWorkspace, state: str, reason: str | None) -> None:
        run = await self.rec.run(self.run_id)
        for prow in run["phases"]:
            if prow["state"] == "running":
                await self.rec.set_phase_state(self.run_id, prow["idx"], "cancelled"
                                               if state == "cancelled" else "failed", reason=reason)
            elif prow["state"] == "queued" and state != "succeeded":
                await self.rec.set_phase_state(self.run_id, prow["idx"], "cancelled",
                                               reason=f"run {state} before this phase")
        if state == "succeeded":
            try:
                head = await wt.git(ws.worktree, "rev-parse", "HEAD")
                await self.rec.set_run_fields(self.run_id, final_commit=head)
            except wt.GitError:
                pass
        await self.rec.set_run_state(self.run_id, state, reason)

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


def judge_test_count(result: CommandResult, *,
                     allow_no_tests: bool) -> tuple[CommandResult, dict[str, Any] | None]:
    """The check's result under the zero-tests rule, and its test counts (``None`` when the
    output holds no runner summary).

    A runner that reports zero tests ran fails the check (``no_tests`` set), even when it
    exited 0 (unittest does on Python 3.11), unless the phase allows it; then pytest's
    "no tests collected" exit status 5 counts as a pass too.
    """
    from msgspec.structs import replace

    from ._testcount import test_counts, zero_tests

    if result.timed_out or result.output_limited:
        return result, None
    counts = test_counts(result.output)
    if not zero_tests(counts):
        return result, counts
    if allow_no_tests:
        if result.exit_code == 5 and counts is not None and counts.get("runner") == "pytest":
            return replace(result, exit_code=0), counts
        return result, counts
    if result.exit_code == 0:
        return replace(result, no_tests=True), counts
    return result, counts


async def end_run_directly(records: RecordsPort, run_id: str, state: str, reason: str) -> None:
    """End a run that no actor is executing (cancelled while queued, a spec that cannot
    load, an actor that keeps crashing): its open phases end too, then the run."""
    run = await records.run(run_id)
    if run["state"] in ("succeeded", "failed", "cancelled"):
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


def excerpt(output: str, limit: int = EXCERPT_BYTES) -> str:
    """The tail of ``output`` within ``limit`` UTF-8 bytes (errors are usually at the end)."""
    data = output.encode("utf-8", "replace")
    if len(data) <= limit:
        return output
    return "[…]\n" + data[-limit:].decode("utf-8", "ignore")


def _loads(text: str) -> Any:
    import msgspec

    return msgspec.json.decode(text)

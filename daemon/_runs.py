"""The Runs service: what the daemon can do with runs (submit, cancel, queries,
follow, reports, normalize, backup), independent of the wire.

The request handler (``_handler``) turns protocol messages into calls here and
:class:`RequestError` (or the store's own errors) into error replies. Nothing
here knows about frames except :meth:`Runs.follow`, which streams events to a
``Connection``.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import trio
from autopack.actors import _worktree as wt
from autopack.actors._llm import LLM
from autopack.actors._run import end_run_directly
from autopack.actors._scheduler import TERMINAL, Scheduler
from autopack.protocol import (
    BackedUp,
    ErrorCode,
    Follow,
    GetDiff,
    ListRuns,
    LogsEnd,
    Normalized,
    NormalizePlan,
    Ok,
    PhaseState,
    Retry,
    RunList,
    RunSpec,
    RunStatus,
    SpecError,
    Submit,
    Submitted,
    spec_to_builtins,
    validate_spec,
)
from autopack.protocol import Diff as DiffReply

from . import _queries as q
from . import _runops as runops
from ._config import LiveSettings
from ._control import Connection
from ._paging import MAX_PAGE_RUNS, fit_event, run_page
from ._records import Records
from ._report import budget_summary, build_report
from ._services import BasePinner
from ._store import Store

LOGGER = logging.getLogger(__name__)


class RequestError(Exception):
    """Raised by a service to answer with an ``Error`` reply (the client's fault or a refusal)."""

    def __init__(self, code: ErrorCode | str, message: str, details: list[str] | None = None) -> None:
        self.code, self.message, self.details = str(code), message, details or []
        super().__init__(message)


def status_reply(run: dict[str, Any], sandbox: str = "") -> RunStatus:
    return RunStatus(
        sandbox=sandbox,
        run_id=run["id"], state=run["state"], reason=run["reason"], goal=run["goal"],
        repo=run["repo"], branch=run["branch"], arm=run["arm"], created_at=run["created_at"],
        started_at=run["started_at"], ended_at=run["ended_at"],
        phases=[PhaseState(id=p["id"], state=p["state"], attempts=p["attempts"], kind=p["kind"],
                           reason=p["reason"], commit=p["commit_sha"]) for p in run["phases"]],
    )


def check_repo(repo: str | None) -> tuple[str, list[str]]:
    """The repository's real path and the problems that make it unusable (none = usable)."""
    if not repo:
        return "", ["repo: no repository given (spec 'repo' or submit --repo)"]
    if not os.path.isabs(repo):
        return repo, [f"repo: must be an absolute path on the daemon's host, got {repo!r}"]
    if not os.path.isdir(repo):
        return repo, [f"repo: {repo} does not exist or is not a directory"]
    if not wt.is_git_repo(repo):
        return repo, [f"repo: {repo} is not a git repository"]
    return os.path.realpath(repo), []


class Runs:
    """Submit, cancel and query runs. ``sandbox_mode()`` is read per reply (the start-up
    probe sets it); ``stopping()`` refuses submits during the graceful stop."""

    def __init__(self, *, store: Store, records: Records, scheduler: Scheduler, llm: LLM,
                 live: LiveSettings, pinner: BasePinner, state_dir: Path,
                 sandbox_mode: Callable[[], str], stopping: Callable[[], bool]) -> None:
        self.store, self.records, self.scheduler, self.llm = store, records, scheduler, llm
        self.live, self.pinner, self.state_dir = live, pinner, state_dir
        self.sandbox_mode, self.stopping = sandbox_mode, stopping
        self._rng = random.Random()

    # ---------------------------------------------------------------- commands
    async def submit(self, req: Submit) -> Submitted:
        if self.stopping():
            raise RequestError(ErrorCode.SHUTTING_DOWN, "the daemon is stopping; submit again later")
        spec = validate_spec(msgspec.to_builtins(req.spec))  # same checks as a file
        repo, problems = check_repo(req.repo or spec.repo)
        if problems:
            raise RequestError(ErrorCode.INVALID_SPEC, "invalid run spec", problems)
        self._check_model_configured(spec)
        arm = req.arm or self._pick_arm()
        run_id = await self.records.submit(spec, repo, arm)
        self.scheduler.poke()
        self.pinner.want(run_id, repo, spec.base)  # after the ack's commit, off its path
        return Submitted(run_id=run_id)

    def _check_model_configured(self, spec: RunSpec) -> None:
        """Refuse build phases up front when no model can be reached at all (no API key
        and no model endpoint): they would only fail when they run."""
        build = [p.id for p in spec.phases if p.kind == "build"]
        if not build or self.llm.has_key or self.live.current.anthropic_base_url \
                or os.environ.get("ANTHROPIC_BASE_URL"):
            return
        raise RequestError(ErrorCode.INVALID_SPEC, (
            f"build phase {build[0]!r} needs a model, but autopackd has no Anthropic API key "
            "and no model endpoint: set ANTHROPIC_API_KEY (or api_key_file) or "
            "anthropic_base_url for the daemon, or make the phase kind = \"command\""))

    def _pick_arm(self) -> str:
        frac = self.live.current.ab_fraction
        return "baseline" if frac > 0 and self._rng.random() < frac else "hardened"

    async def retry(self, req: Retry) -> Submitted:
        run_id = await runops.retry(self.store, req)
        self.scheduler.poke()
        return Submitted(run_id=run_id)

    async def cancel(self, run_id: str) -> Ok:
        """End a run in any non-terminal state (queued, running, interrupted; also one whose
        actor keeps crashing): the actor is cancelled if one executes it, and the end is
        recorded here if no actor did."""
        run = await self.records.run(run_id)
        state = run["state"]
        if state in TERMINAL:
            raise RequestError(ErrorCode.INVALID_STATE, f"run {run_id} already ended ({state})")
        ended = self.scheduler.cancel(run_id)  # also keeps the scheduler from (re)starting it
        try:
            if ended is not None:
                with trio.move_on_after(30):  # the run's processes are being killed
                    await ended.wait()
            run = await self.records.run(run_id)
            if run["state"] not in TERMINAL:
                await end_run_directly(self.records, run_id, "cancelled", "cancelled by user")
            run = await self.records.run(run_id)
        finally:
            self.scheduler.cancel_done(run_id)
        if run["state"] != "cancelled":
            raise RequestError(ErrorCode.INVALID_STATE,
                               f"run {run_id} ended {run['state']} before the cancel took effect")
        return Ok(message=f"run {run_id} cancelled")

    async def backup(self, path: str) -> BackedUp:
        """``autopackctl backup PATH``: an online copy of the database (see ``_integrity``)."""
        from ._integrity import BackupError, online_backup

        try:
            size = await trio.to_thread.run_sync(online_backup, self.state_dir / "autopack.db",
                                                 Path(path))
        except BackupError as exc:
            raise RequestError(ErrorCode.INVALID_REQUEST, str(exc)) from None
        LOGGER.info("backup written to %s (%d bytes)", path, size)
        return BackedUp(path=path, bytes=size)

    # ---------------------------------------------------------------- queries
    async def resolve(self, ref: str) -> str:
        """A short id, a unique prefix or ``latest`` → the full run id (see ``_runops``)."""
        full: str = await self.store.call(runops.resolve_run_id, ref)
        return full

    async def status(self, run_id: str) -> RunStatus:
        run = await self.records.run(run_id)
        st = status_reply(run, self.sandbox_mode())
        spend = await self.records.spend(run["id"], "")
        # the refused call's figures are in the run's budget_exhausted event
        ended = (await self.records.all_events(run["id"])
                 if (run["reason"] or "").startswith("budget_exhausted") else [])
        budget = budget_summary(run, spend["run_tokens"], spend["run_pusd"] / 10**12, ended)
        return msgspec.structs.replace(st, tokens=spend["run_tokens"], budget=budget)

    async def list_page(self, req: ListRuns) -> RunList:
        """One page of runs, newest first, never more than a frame (see ``_paging``)."""
        limit = min(max(req.limit, 1), MAX_PAGE_RUNS)
        rows = await self.records.list_runs(req.state, limit + 1, states=req.states,
                                            before=req.before)
        return run_page([(r["seq"], status_reply(r, self.sandbox_mode())) for r in rows], limit,
                        self.live.current.max_frame_bytes)

    async def diff(self, req: GetDiff) -> DiffReply:
        return await runops.diff(self.store, req)

    async def next_prompt(self, run_id: str) -> tuple[str | None, RunSpec | None]:
        """What a run's next prompt is for: the phase (the running one, else the first
        queued) and, while the run can still prompt (not ended, not the ``baseline`` arm,
        which goes without context), its spec, from which memory builds the intention
        context when it has not recorded the run yet."""
        run = await self.records.run(run_id)
        current = next((p["id"] for p in run["phases"] if p["state"] == "running"), None)
        if current is None:
            current = next((p["id"] for p in run["phases"] if p["state"] == "queued"), None)
        if run["state"] in TERMINAL or run.get("arm") == "baseline":
            return current, None
        return current, validate_spec(q.loads(run["spec"]))

    async def stats(self, since_s: float | None, by_arm: bool) -> dict[str, Any]:
        from ._stats import compute_stats

        since = time.time() - since_s if since_s else None
        data: dict[str, Any] = await self.store.read(compute_stats, since_ts=since, by_arm=by_arm)
        return data

    async def follow(self, conn: Connection, req: Follow) -> None:
        """``logs [-f]``: the run's events, from the one event stream the dashboard's live
        pages read too, one frame per event (reads in pages of 1,000); then ``LogsEnd`` (at
        once without ``follow``, when the run ends with it)."""
        from .web import event_stream

        run = await self.records.run(req.run_id)  # UnknownRun before anything is sent
        after = req.after
        budget = req.limit if req.limit > 0 and not req.follow else None
        page = 1000 if budget is None else min(1000, budget)
        async for events, caught_up in event_stream(self.store, after=after, run_id=req.run_id,
                                                    fetch=q.events_after, batch=page):
            max_frame = self.live.current.max_frame_bytes
            for ev in events if budget is None else events[:budget]:
                after = ev["id"]
                await conn.send(fit_event(ev, max_frame))
            if budget is not None:
                budget -= len(events)
                if budget <= 0:
                    more = bool(await self.records.events_after(req.run_id, after, 1))
                    run = await self.records.run(req.run_id)
                    await conn.send(LogsEnd(state=run["state"], last_id=after, more=more))
                    return
            if not caught_up:
                continue
            run = await self.records.run(req.run_id)
            if not req.follow or run["state"] in TERMINAL:
                await conn.send(LogsEnd(state=run["state"], last_id=after))
                return

    async def report(self, run_id: str) -> dict[str, Any]:
        run = await self.records.run(run_id)
        events = await self.records.all_events(run_id)
        tokens = await self.records.tokens(run_id)
        calls = await self.records.llm_calls(run_id)
        commits: list[dict[str, str]] = []
        if run["base_commit"] and wt.is_git_repo(run["repo"]):
            try:
                commits = await wt.branch_commits(Path(run["repo"]), run["base_commit"],
                                                  run["branch"])
            except wt.GitError:
                commits = []
        return build_report(run, events, tokens, commits, calls=calls)

    # ---------------------------------------------------------------- plans
    async def normalize(self, req: NormalizePlan) -> Normalized:
        """Normalize a raw plan and answer with the spec to review; no run is created."""
        from autopack.actors._normalize import PlanError, normalize_plan

        if len(req.plan.encode("utf-8", "replace")) > self.live.current.max_frame_bytes:
            raise RequestError(ErrorCode.INVALID_PLAN, "the plan is too large")
        if req.repo and not wt.is_git_repo(req.repo):
            raise RequestError(ErrorCode.INVALID_PLAN, f"{req.repo} is not a git repository")
        if req.llm:
            return await self._normalize_llm(req)
        try:
            result = await trio.to_thread.run_sync(
                lambda: normalize_plan(req.plan, Path(req.repo) if req.repo else None))
        except PlanError as exc:
            raise RequestError(ErrorCode.INVALID_PLAN, str(exc)) from None
        return Normalized(spec=spec_to_builtins(result.spec), confidence=result.confidence,
                          warnings=result.warnings,
                          phases=[msgspec.to_builtins(p) for p in result.phases])

    async def _normalize_llm(self, req: NormalizePlan) -> Normalized:
        from autopack.actors._doctor import normalize_with_llm
        from autopack.actors._llm import LLMError
        from autopack.actors._normalize import PlanError, result_from_raw_spec

        try:
            raw = await normalize_with_llm(self.llm, req.plan, req.repo)
            result = result_from_raw_spec(raw, repo=req.repo, source="the LLM")
        except LLMError as exc:
            raise RequestError(ErrorCode.UNAVAILABLE,
                               f"Claude could not normalize the plan: {exc}") from None
        except (SpecError, PlanError) as exc:
            raise RequestError(ErrorCode.INVALID_PLAN, f"the LLM's spec is invalid: {exc}") from None
        return Normalized(spec=spec_to_builtins(result.spec), confidence=result.confidence,
                          warnings=result.warnings,
                          phases=[msgspec.to_builtins(p) for p in result.phases])

"""The I/O of a run's attempts: one method per action of the run engine.

:class:`AttemptSteps` performs the engine's phase actions (:mod:`._engine`):
the Builder's turn and the drift check, one check, the classification, a
mitigation, a Doctor call, the Doctor's fix, the commit, the memory notes at
an attempt's end. Each method returns the engine events it produced, with the
descriptive fields their rows carry besides the engine's own (``logs``, the
dashboard, reports and ``stats`` read them); the run actor records and feeds
them. No rule lives here: what to do next is always the engine's answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import msgspec
from autopack.protocol import Classification, ClassifyContext, PhaseSpec, RunSpec
from autopack.protocol._classification import stable_signature

from . import _engine as E
from . import _worktree as wt
from ._env import ensure_venv, with_venv
from ._ports import RecordsPort
from ._proc import CommandResult, run_command

LOGGER = logging.getLogger(__name__)
EXCERPT_BYTES = 4000

Classify = Callable[[str, int | None, ClassifyContext], Awaitable[Classification]]
Mitigate = Callable[..., Awaitable[Any]]  # classifier.apply_mitigation's shape → ActionResult


@dataclass
class RunTools:
    """The run's collaborators besides the store; ``None``: not configured."""

    classify: Classify | None = None
    mitigate: Mitigate | None = None
    memory: Any = None  # MemoryClient: intention, context, outcomes (degradable)
    llm: Any = None  # _llm.LLM: the Builder's and the Doctor's model
    mean_doctor_tokens: Callable[[], Awaitable[float | None]] | None = None


@dataclass
class RunWorkspace:
    """The run's working state."""

    run_id: str
    spec: RunSpec
    repo: Path
    worktree: Path
    venv: Path
    base_sha: str = ""
    arm: str = "hardened"
    env: dict[str, str] = field(default_factory=dict)
    toolchain: str | None = None
    repo_modules: list[str] = field(default_factory=list)
    node_manager: str | None = None
    intention_recorded: bool = False
    described: bool = False
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


@dataclass
class PhaseNotes:
    """What the shell keeps of a phase for prompts and lessons (never for decisions)."""

    previous: Classification | None = None  # the last failure's classification
    classified: int = 0  # the attempt it belongs to
    failed: CommandResult | None = None  # the last failed check
    checks: list[str] = field(default_factory=list)
    checks_of: int = 0  # the attempt ``checks`` were detected for
    fix_note: str | None = None  # what a mitigation or Doctor fix did, for the lesson
    last_tree: str | None = None  # snapshot after the previous attempt's Builder (diffs)


@dataclass(frozen=True)
class Emitted:
    """An engine event and the descriptive fields of its row (``None``: its store call —
    a state change, ``begin_attempt``, ``add_doctor_call`` — already recorded it)."""

    event: E.Event
    extra: dict[str, Any] | None = None


class AttemptSteps:
    """Performs the engine's attempt actions for one run."""

    def __init__(self, *, run_id: str, records: RecordsPort, settings: Callable[[], Any],
                 tools: RunTools, ws: RunWorkspace, time_left: Callable[[], float]) -> None:
        self.run_id = run_id
        self.rec = records
        self._settings = settings  # called at each use: a reload swaps the snapshot
        self.tools = tools
        self.ws = ws
        self.time_left = time_left
        self.notes: dict[int, PhaseNotes] = {}

    @property
    def settings(self) -> Any:
        return self._settings()

    def note(self, idx: int) -> PhaseNotes:
        return self.notes.setdefault(idx, PhaseNotes())

    # ------------------------------------------------------------------ flags per run
    @property
    def hardening(self) -> bool:
        return bool(self.settings.enable_failure_hardening) and self.ws.arm != "baseline"

    @property
    def context_on(self) -> bool:
        return bool(self.settings.enable_intention_context) and self.ws.arm != "baseline" \
            and self.tools.memory is not None

    @property
    def llm_available(self) -> bool:
        llm = self.tools.llm
        return llm is not None and bool(getattr(llm, "has_key", True))

    # ------------------------------------------------------------------ Builder
    async def builder(self, phase: PhaseSpec, a: E.RunBuilder) -> list[Emitted]:
        from ._builder import run_builder
        from ._drift import changed_files, outside_scope, revert_paths

        llm, ws, attempt, n = self.tools.llm, self.ws, a.attempt, self.note(a.idx)
        if llm is None:
            return [Emitted(E.Fatal(reason="build phases need the Builder: no LLM is configured"),
                            {})]
        if not getattr(llm, "has_key", True):
            return [Emitted(E.Fatal(reason="no Anthropic API key: set ANTHROPIC_API_KEY or the "
                                           "anthropic_api_key credential (api_key_file)"), {})]
        if not ws.venv_active:
            await ws.activate_venv()
        context = await self.context(phase, attempt, "builder", n.previous)
        budget = await self.budget(phase)
        await self.rec.event(self.run_id, phase.id, attempt, "builder_started",
                             context_bytes=len(context.encode()), retry=a.hint is not None)
        usages: list[Any] = []
        s = self.settings
        result = await run_builder(
            llm, worktree=ws.worktree, env=ws.env, run_id=self.run_id, phase=phase,
            context_text=context, retry_hint=a.hint, previous=n.previous,
            max_turns=int(s.builder_max_turns), wall_s=float(s.builder_attempt_wall_s),
            token_limit=s.builder_attempt_tokens, attempt=attempt, budget=budget,
            on_usage=usages.append, command_timeout_s=min(phase.timeout_s, 600), box=ws.box,
            cwd=ws.cwd, lean=self.hardening, evidence=a.evidence, prune=_context_editing(s))
        for usage in usages:
            await self.record_usage(phase, attempt, usage)
        out = [Emitted(E.BuilderFinished(phase=phase.id, stop_reason=result.stop_reason,
                                         error=result.error),
                       {"turns": result.turns, "tool_calls": result.tool_calls,
                        "refused": result.refused, "tokens": result.total_tokens,
                        "summary": result.summary[:500]})]
        if result.stop_reason == "auth_error":
            return out
        if result.stop_reason == "budget_exhausted":
            return [*out, budget_ended(phase.id, "builder", result.refusal or result.error)]
        drift = outside_scope(await changed_files(ws.worktree), phase.scope)
        if drift:
            policy = str(s.drift_policy)
            if policy == "revert":
                await revert_paths(ws.worktree, drift)
            out.append(Emitted(E.DriftFound(phase=phase.id, files=drift[:50], action=policy), {}))
            if policy == "fail":
                return out
        await self._record_edits(phase, attempt, n)
        return out

    async def _record_edits(self, phase: PhaseSpec, attempt: int, n: PhaseNotes) -> None:
        """The Builder's edits of this attempt as a bounded diff (``builder_diff`` event),
        against the previous attempt's snapshot; the dashboard shows it per attempt."""
        from ._drift import edits_since
        from ._errors import GitError

        try:
            edits = await edits_since(self.ws.worktree, n.last_tree)
        except (GitError, OSError) as exc:  # a diff is for people: never fails the attempt
            LOGGER.warning("run %s: cannot record the Builder's diff: %s", self.run_id, exc)
            return
        n.last_tree = str(edits["tree"])
        await self.rec.event(self.run_id, phase.id, attempt, "builder_diff", **edits)

    # ------------------------------------------------------------------ checks
    async def check(self, phase: PhaseSpec, a: E.RunCheck) -> list[Emitted]:
        n = self.note(a.idx)
        if a.n == 0 or n.checks_of != a.attempt:
            checks = await self.checks_for(phase, a.attempt)
            if not checks:
                return [Emitted(E.Fatal(reason=f"phase {phase.id}: no checks given and none "
                                               "detected"), {})]
            n.checks, n.checks_of = checks, a.attempt
        command = n.checks[a.n]
        result, tests = await self.run_one(phase, a.attempt, command)
        if not result.ok:
            n.failed = result
        event = E.CheckFinished(phase=phase.id, command=command, exit_code=result.exit_code,
                                last=a.n == len(n.checks) - 1, now=time.time(),
                                timed_out=result.timed_out, output_limited=result.output_limited,
                                no_tests=result.no_tests)
        return [Emitted(event, {"duration_s": result.duration_s, "truncated": result.truncated,
                                "output_bytes": result.output_bytes, "tests": tests,
                                "excerpt": excerpt(result.output)})]

    async def checks_for(self, phase: PhaseSpec, attempt: int) -> list[str]:
        """The phase's checks, or the toolchain's defaults when it lists none."""
        if phase.checks:
            return list(phase.checks)
        from ._toolchain import default_checks

        checks, reasons = await anyio.to_thread.run_sync(default_checks, self.ws.cwd)
        await self.rec.event(self.run_id, phase.id, attempt, "checks_detected", checks=checks,
                             reasons=reasons)
        return list(checks)

    async def run_one(self, phase: PhaseSpec, attempt: int,
                      command: str) -> tuple[CommandResult, dict[str, Any] | None]:
        ws, limits = self.ws, self.ws.spec.limits
        await self.rec.event(self.run_id, phase.id, attempt, "check_started", command=command)

        async def on_start(pgid: int) -> None:
            await self.rec.add_process(pgid, self.run_id, command)

        async def on_end(pgid: int) -> None:
            await self.rec.remove_process(pgid)

        result = await run_command(command, cwd=ws.cwd, env=ws.env,
                                   timeout_s=min(phase.timeout_s, self.time_left()),
                                   max_output=limits.max_output_bytes,
                                   output_limit=limits.check_output_limit_bytes,
                                   on_start=on_start, on_end=on_end, box=ws.box)
        # regexes over up to max_output_bytes (16 MiB) of output: off the event loop, so
        # /healthz and every other request keep answering while a loud check ends
        return await anyio.to_thread.run_sync(
            lambda: judge_test_count(result, allow_no_tests=phase.allow_no_tests))

    # ------------------------------------------------------------------ classification
    async def classify(self, phase: PhaseSpec, a: E.Classify) -> list[Emitted]:
        n, ws = self.note(a.idx), self.ws
        failed = n.failed
        assert failed is not None, "Classify without a failed check"
        hardening = self.hardening and self.tools.classify is not None
        if failed.no_tests:
            c = _no_tests_classification(failed)  # decided by the check itself, not a pattern
        elif hardening:
            assert self.tools.classify is not None
            await ws.describe()
            ctx = ClassifyContext(command=failed.command, repo_root=str(ws.worktree),
                                  toolchain=ws.toolchain, repo_modules=ws.repo_modules,
                                  lockfile_manager=ws.node_manager)
            c = await self.tools.classify(failed.output, failed.exit_code, ctx)
        else:
            c = Classification(pattern=None, evidence=_last_lines(failed.output, 2))
        value = int(await self._doctor_value()) if c.pattern is not None else 0
        signature = c.signature if c.pattern else stable_signature(
            f"none:{failed.exit_code}", _last_lines(failed.output, 3))
        n.previous, n.classified = c, a.attempt
        lean = self.hardening
        evidence = None
        if lean:
            from ._builder import evidence_excerpt

            lines = c.evidence if c.pattern is not None else _last_lines(failed.output, 6)
            evidence = evidence_excerpt(failed.output, lines) or None
        event = E.Classified(
            phase=phase.id, pattern=c.pattern, signature=signature,
            mitigation_kind=c.mitigation.kind if c.mitigation else None,
            mitigation_hint=c.mitigation.hint if c.mitigation and c.mitigation.hint else None,
            action_key=_action_key(c), auto_allowed=c.pattern in set(self.settings.auto_mitigate),
            llm_available=self.llm_available, doctor_value=value, lean=lean,
            retry_evidence=evidence, fallback_hint=None if lean else _excerpt_hint(failed))
        return [Emitted(event, {
            "evidence": c.evidence, "details": c.details, "command": failed.command,
            "exit_code": failed.exit_code, "hardening": hardening,
            "mitigation": msgspec.to_builtins(c.mitigation) if c.mitigation else None})]

    async def _doctor_value(self) -> float:
        get = self.tools.mean_doctor_tokens
        measured = await get() if get else None
        return measured or float(self.settings.default_doctor_tokens)

    async def mitigate(self, phase: PhaseSpec, a: E.Mitigate, done: frozenset[str]) -> list[Emitted]:
        n, ws = self.note(a.idx), self.ws
        c = n.previous
        assert c is not None
        if self.tools.mitigate is None:
            return [Emitted(E.MitigationDone(phase=phase.id, ok=False, acted=False),
                            {"pattern": c.pattern, "action": None, "summary": "no mitigation",
                             "undeclared": None})]
        python = None
        if c.pattern == "python_missing_dep":
            python = await ws.activate_venv()  # installs go into the run's own venv
        out = await self.tools.mitigate(c, worktree=ws.worktree, python=python, env=ws.env,
                                        allowed=set(self.settings.auto_mitigate),
                                        already=set(done), box=ws.box)
        if out.acted and out.ok:
            n.fix_note = out.summary
        hint = None
        if out.undeclared:
            hint = (f"{out.undeclared} was missing and autopack installed it into the run's "
                    f"environment; declare it in the project's dependency manifest.")
        return [Emitted(E.MitigationDone(phase=phase.id, ok=out.ok, acted=out.acted,
                                         key=out.key or None, hint=hint),
                        {"pattern": c.pattern,
                         "action": c.mitigation.kind if c.mitigation else None,
                         "summary": out.summary, "undeclared": out.undeclared})]

    # ------------------------------------------------------------------ Doctor
    async def count_doctor(self, phase: PhaseSpec, a: E.CountDoctorCall) -> list[Emitted]:
        await self.rec.add_doctor_call(self.run_id, a.idx)  # records ``doctor_asked``
        return [Emitted(E.DoctorAsked(phase=phase.id))]

    async def doctor(self, phase: PhaseSpec, a: E.AskDoctor) -> list[Emitted]:
        from ._doctor import ask_doctor
        from ._errors import BudgetExhausted, DoctorMalformed, LLMAuthError, LLMError

        n, attempt = self.note(a.idx), a.attempt
        failed = n.failed
        assert failed is not None
        context = await self.context(phase, attempt, "doctor", n.previous)
        budget = await self.budget(phase)
        try:
            decision = await ask_doctor(self.tools.llm, run_id=self.run_id, phase=phase,
                                        excerpt=failed.output, classification=n.previous,
                                        context_text=context, attempt=attempt, budget=budget)
        except DoctorMalformed as exc:
            if exc.usage is not None:
                await self.record_usage(phase, attempt, exc.usage)
            return [Emitted(E.DoctorFailed(phase=phase.id, why="malformed", error=str(exc)), {})]
        except LLMAuthError as exc:
            return [Emitted(E.Fatal(reason=f"LLM authentication failed: {exc}"), {})]
        except BudgetExhausted as exc:
            return [budget_ended(phase.id, "doctor", exc)]
        except LLMError as exc:  # refused request, outage after retries: a failed Doctor call
            return [Emitted(E.DoctorFailed(phase=phase.id, why="error", error=str(exc)), {})]
        await self.record_usage(phase, attempt, decision.usage)
        return [Emitted(E.DoctorDecided(phase=phase.id, action=decision.action,
                                        rationale=decision.rationale, hint=decision.hint,
                                        command=decision.command),
                        {"tokens": decision.usage.total_tokens,
                         "context_bytes": len(context.encode())})]

    async def fix(self, phase: PhaseSpec, a: E.RunFix) -> list[Emitted]:
        from ._doctor import run_fix

        ws = self.ws
        if not ws.venv_active:
            await ws.activate_venv()  # whatever it installs goes into the run's venv
        result = await run_fix(a.command, ws.cwd, ws.env, timeout=300, box=ws.box)
        self.note(a.idx).fix_note = f"ran `{a.command}`"
        return [Emitted(E.FixDone(phase=phase.id, exit_code=result.exit_code),
                        {"command": a.command})]

    # ------------------------------------------------------------------ the attempt's end
    async def commit(self, phase: PhaseSpec, a: E.Commit) -> list[Emitted]:
        """Record what worked (the memory actor turns earlier failures of this phase and
        this fix into lessons), then commit the phase."""
        n = self.note(a.idx)
        if self.context_on and n.previous is not None:
            await self.tools.memory.record_outcome(
                self.run_id, phase.id, a.attempt, tried=f"attempt {a.attempt}", pattern=None,
                evidence="", worked=True, fix=n.fix_note or self._hint_of(n))
        sha = await wt.commit_phase(self.ws.worktree, self.run_id, phase.id, phase.goal)
        return [Emitted(E.AttemptEnded(phase=phase.id, attempt=a.attempt, outcome="succeeded",
                                       commit=sha), {})]

    @staticmethod
    def _hint_of(n: PhaseNotes) -> str | None:
        c = n.previous
        return c.mitigation.hint if c is not None and c.mitigation else None

    async def end_attempt(self, phase: PhaseSpec, a: E.EndAttempt) -> list[Emitted]:
        n = self.note(a.idx)
        if (a.outcome in ("retry", "failed") and n.classified == a.attempt
                and n.previous is not None and n.failed is not None and self.context_on):
            c = n.previous
            await self.tools.memory.record_outcome(
                self.run_id, phase.id, a.attempt, tried=f"attempt {a.attempt}: {n.failed.command}",
                pattern=c.pattern, evidence="; ".join(c.evidence)[:500], worked=False)
        return [Emitted(E.AttemptEnded(phase=phase.id, attempt=a.attempt, outcome=a.outcome,
                                       reason=a.reason), {})]

    # ------------------------------------------------------------------ shared
    async def context(self, phase: PhaseSpec, attempt: int, role: str,
                      failure: Classification | None) -> str:
        if not self.context_on:
            return ""
        memory, ws = self.tools.memory, self.ws
        if not ws.intention_recorded:
            ws.intention_recorded = await memory.record_intention(self.run_id, str(ws.repo),
                                                                  ws.spec)
            if not ws.intention_recorded:  # tried again at the next prompt
                await self.rec.event(self.run_id, phase.id, attempt, "memory_degraded",
                                     role=role, what="record_intention")
        result = await memory.context_for(self.run_id, phase.id, role, failure)
        if result.degraded:
            await self.rec.event(self.run_id, phase.id, attempt, "memory_degraded", role=role,
                                 what="context_for")
        return str(result.text)

    async def budget(self, phase: PhaseSpec) -> Any:
        """The phase's and run's budget (tokens and USD), charged with what the database says
        was already spent, so budgets hold across attempts, phases and restarts."""
        from ._budget import Budget

        spent = await self.rec.spend(self.run_id, phase.id)
        limits = self.ws.spec.limits
        return Budget(token_limit=limits.token_budget, usd_limit=limits.usd_budget,
                      phase_token_limit=limits.phase_token_budget,
                      phase_usd_limit=limits.phase_usd_budget,
                      prices=getattr(self.settings, "prices", {}) or {},
                      tokens_used=spent["run_tokens"], pusd_used=spent["run_pusd"],
                      phase_tokens_used=spent["phase_tokens"], phase_pusd_used=spent["phase_pusd"])

    async def record_usage(self, phase: PhaseSpec, attempt: int, usage: Any) -> None:
        await self.rec.record_llm_call(
            self.run_id, phase.id, attempt, usage.role, usage.model,
            {"input": usage.input_tokens, "output": usage.output_tokens,
             "cache_creation": usage.cache_creation_input_tokens,
             "cache_read": usage.cache_read_input_tokens},
            cost_pusd=getattr(usage, "cost_pusd", None))


def budget_ended(phase_id: str, role: str, why: Any) -> Emitted:
    """The next call did not fit a budget: the figures go in the row, the run ends."""
    refusal = getattr(why, "refusal", why)
    figures = msgspec.to_builtins(refusal) if hasattr(refusal, "__struct_fields__") else {}
    message = refusal.message() if hasattr(refusal, "message") else str(why)
    return Emitted(E.BudgetExhausted(phase=phase_id, message=message), {"role": role, **figures})


def judge_test_count(result: CommandResult, *,
                     allow_no_tests: bool) -> tuple[CommandResult, dict[str, Any] | None]:
    """The check's result under the engine's zero-tests rule
    (:func:`._engine.zero_tests_verdict`), and its test counts (``None`` when the output
    holds no runner summary)."""
    from msgspec.structs import replace

    from ._testcount import test_counts

    if result.timed_out or result.output_limited:
        return result, None
    counts = test_counts(result.output)
    ran = counts.get("ran") if counts is not None else None
    exit_code, no_tests = E.zero_tests_verdict(
        exit_code=result.exit_code, timed_out=False, output_limited=False,
        runner=counts.get("runner") if counts is not None else None,
        ran=ran if isinstance(ran, int) else None, allow_no_tests=allow_no_tests)
    if exit_code != result.exit_code or no_tests != result.no_tests:
        result = replace(result, exit_code=exit_code, no_tests=no_tests)
    return result, counts


def excerpt(output: str, limit: int = EXCERPT_BYTES) -> str:
    """The tail of ``output`` within ``limit`` UTF-8 bytes (errors are usually at the end)."""
    data = output.encode("utf-8", "replace")
    if len(data) <= limit:
        return output
    return "[…]\n" + data[-limit:].decode("utf-8", "ignore")


def _context_editing(settings: Any) -> bool | str:
    """The ``builder_context_editing`` setting as ``run_builder``'s ``prune``."""
    value = str(getattr(settings, "builder_context_editing", "ours"))
    return False if value == "off" else value


def _action_key(c: Classification) -> str | None:
    m = c.mitigation
    if m is None or m.kind not in ("install_dependency", "wait"):
        return None
    return f"{m.kind}:{m.manager}:{m.package}" if m.kind == "install_dependency" else f"wait:{c.pattern}"


def _no_tests_classification(failed: CommandResult) -> Classification:
    """A check that exited 0 but whose runner reported zero tests ran."""
    from .classifier import mitigation_for

    lines = [ln for ln in _last_lines(failed.output, 6)
             if "Ran 0 test" in ln or "no tests ran" in ln or " in " in ln and "skipped" in ln]
    evidence = lines[-1:] or _last_lines(failed.output, 1)
    details: dict[str, Any] = {"tests_ran": 0, "exit_code": failed.exit_code}
    ctx = ClassifyContext(command=failed.command)
    return Classification(pattern="no_tests_collected", evidence=evidence, details=details,
                          mitigation=mitigation_for("no_tests_collected", details, ctx))


def _last_lines(text: str, n: int) -> list[str]:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-n:]


def _excerpt_hint(failed: CommandResult) -> str:
    tail = "\n".join(failed.output.strip().splitlines()[-30:])
    return f"The check `{failed.command}` failed with exit {failed.exit_code}:\n{tail[-1500:]}"

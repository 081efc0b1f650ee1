"""PhaseRunner: the attempt loop of one phase with Builder, classifier, mitigations, Doctor.

Per attempt: (build phases) the Builder edits the worktree → drift check →
the checks. On a failed check the deterministic classifier names the cause
(zero tokens); :func:`._policy.decide` picks the cheapest next step: a safe
action and the checks again (same attempt), a new attempt with a hint, one
Doctor call, or the end of the phase with a named reason. Every step is an
event; tokens are recorded per call. The run's A/B arm ``baseline`` turns
failure hardening and intention context off, so their value can be measured.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec
from autopack.protocol import Classification, ClassifyContext, PhaseSpec
from autopack.protocol._classification import stable_signature

from ._engine import FailureFacts, Next, decide
from ._proc import CommandResult

if TYPE_CHECKING:
    from ._run import RunActor, RunWorkspace
    from .classifier import ActionResult

LOGGER = logging.getLogger(__name__)


Classify = Callable[[str, int | None, ClassifyContext], Awaitable[Classification]]
Mitigate = Callable[..., Awaitable["ActionResult"]]


@dataclass
class _PhaseState:
    """What one phase remembers across its attempts (rebuilt on resume from events)."""

    hint: str | None = None
    previous: Classification | None = None
    previous_signature: str | None = None
    done_actions: set[str] = field(default_factory=set)
    doctor_calls: int = 0
    fix_note: str | None = None  # what a mitigation or Doctor fix did, for the lesson
    evidence: str | None = None  # the previous failure's matched lines, for a lean retry
    # Doctor calls a pattern made unnecessary, credited only if the phase then passes
    # without the Doctor: (pattern, tokens of the call not made)
    pending_avoided: list[tuple[str, int]] = field(default_factory=list)
    last_tree: str | None = None  # snapshot after the previous attempt's Builder (diffs)


class PhaseRunner:
    """Strategy object the run actor calls for each phase (see ``RunServices.phase_runner``)."""

    def __init__(self, *, settings: Any, classify: Classify | None = None,
                 mitigate: Mitigate | None = None, memory: Any = None, llm: Any = None,
                 mean_doctor_tokens: Callable[[], Awaitable[float | None]] | None = None) -> None:
        self.settings = settings
        self.classify = classify
        self.mitigate = mitigate
        self.memory = memory
        self.llm = llm
        self.mean_doctor_tokens = mean_doctor_tokens

    # ------------------------------------------------------------------ flags per run
    def hardening(self, arm: str) -> bool:
        return bool(self.settings.enable_failure_hardening) and arm != "baseline"

    def context_on(self, arm: str) -> bool:
        return bool(self.settings.enable_intention_context) and arm != "baseline" \
            and self.memory is not None

    # ------------------------------------------------------------------ the loop
    async def run_phase(self, actor: RunActor, ws: RunWorkspace, idx: int,
                        phase: PhaseSpec) -> tuple[str, str | None, str | None]:
        # Doctor calls already made count (a resumed phase, earlier phases): the limits are durable
        run = await actor.rec.run(actor.run_id)
        st = _PhaseState(doctor_calls=run["phases"][idx]["doctor_calls"])
        ws.doctor_calls = sum(p["doctor_calls"] for p in run["phases"])
        limits = ws.spec.limits
        arm = ws.arm
        while True:
            attempt = await actor.rec.begin_attempt(actor.run_id, idx)
            if attempt > limits.max_attempts:
                return "failed", f"attempt limit ({limits.max_attempts}) reached", None
            if phase.kind == "build":
                await self._build(actor, ws, phase, attempt, st)
            checks = await actor.checks_for(ws, idx, phase, attempt)
            while True:  # checks, and again after an action that should fix them
                failed = await actor.run_checks(ws, idx, phase, attempt, checks)
                if failed is None:
                    await self._credit_avoided(actor, phase, attempt, st)
                    await self._succeeded(actor, ws, phase, attempt, st)
                    return "succeeded", None, await actor.commit(ws, phase)
                step, reason, c = await self._judge(actor, ws, phase, attempt, failed, st, arm)
                if step is Next.MITIGATE:
                    if await self._mitigate(actor, ws, phase, attempt, c, st):
                        continue
                    step, reason = (Next.RETRY, "mitigation failed") if (
                        phase.kind == "build" and attempt < limits.max_attempts) else (
                        Next.FAIL, f"{c.pattern}: mitigation failed")
                if step is Next.DOCTOR:
                    step, reason, recheck = await self._doctor(actor, ws, idx, phase, attempt,
                                                               failed, c, st)
                    if recheck:
                        continue
                    if step == "skip":
                        return "skipped", reason, None
                await self._remember_failure(actor, ws, phase, attempt, c, failed, worked=False)
                if step is Next.FAIL:
                    return "failed", f"{reason} (`{failed.command}` exit {failed.exit_code})", None
                self._retry_notes(st, c, failed, lean=self.hardening(arm))
                break  # next attempt

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _retry_notes(st: _PhaseState, c: Classification, failed: CommandResult, *,
                     lean: bool) -> None:
        """What the next attempt is told: in the lean (hardened) layout the classifier's
        evidence with a few lines of context and the hint, never the raw output's tail;
        in the baseline layout the hint or, without one, the output's tail."""
        from ._builder import evidence_excerpt

        hint = st.hint or (c.mitigation.hint if c.mitigation else None)
        if not lean:
            st.evidence, st.hint = None, hint or _excerpt_hint(failed)
            return
        lines = c.evidence if c.pattern is not None else _last_lines(failed.output, 6)
        st.evidence = evidence_excerpt(failed.output, lines) or None
        st.hint = hint

    async def _judge(self, actor: RunActor, ws: RunWorkspace, phase: PhaseSpec, attempt: int,
                     failed: CommandResult, st: _PhaseState,
                     arm: str) -> tuple[Next, str, Classification]:
        hardening = self.hardening(arm) and self.classify is not None
        if failed.no_tests:
            c = _no_tests_classification(failed)  # decided by the check itself, not a pattern
        elif hardening:
            assert self.classify is not None
            await ws.describe()
            ctx = ClassifyContext(command=failed.command, repo_root=str(ws.worktree),
                                  toolchain=ws.toolchain, repo_modules=ws.repo_modules,
                                  lockfile_manager=ws.node_manager)
            c = await self.classify(failed.output, failed.exit_code, ctx)
        else:
            c = Classification(pattern=None, evidence=_last_lines(failed.output, 2))
        avoided = 0
        if c.pattern is not None:
            avoided = int(await self._doctor_value())
        signature = c.signature if c.pattern else stable_signature(
            f"none:{failed.exit_code}", _last_lines(failed.output, 3))
        limits = ws.spec.limits
        key = _action_key(c)
        facts = FailureFacts(
            kind=phase.kind, pattern=c.pattern,
            mitigation_kind=c.mitigation.kind if c.mitigation else None,
            auto_allowed=c.pattern in set(self.settings.auto_mitigate),
            already_done=key is not None and key in st.done_actions,
            attempt=attempt, max_attempts=limits.max_attempts,
            same_as_previous=signature == st.previous_signature,
            llm_available=self.llm is not None and bool(getattr(self.llm, "has_key", True)),
            doctor_left_phase=limits.doctor_calls_per_phase - st.doctor_calls,
            doctor_left_run=limits.doctor_calls_per_run - ws.doctor_calls,
        )
        step, reason = decide(facts)
        # a Doctor call is avoided only if, without the pattern, one would have been made
        # (not when the failure ends the phase anyway) and the deterministic step is taken;
        # it is credited later, when an attempt passes without the Doctor
        avoidable = avoided if _doctor_would_be_asked(facts) else 0
        if avoidable and c.pattern is not None and step in (Next.MITIGATE, Next.RETRY):
            st.pending_avoided.append((c.pattern, avoidable))
        st.previous_signature = signature
        st.previous = c
        if step is not Next.MITIGATE:
            st.hint = c.mitigation.hint if c.mitigation and c.mitigation.hint else None
        await actor.rec.event(
            actor.run_id, phase.id, attempt, "classified", pattern=c.pattern,
            evidence=c.evidence, details=c.details, command=failed.command,
            exit_code=failed.exit_code, hardening=hardening,
            mitigation=msgspec.to_builtins(c.mitigation) if c.mitigation else None,
            doctor_avoidable=avoidable, decision=str(step), reason=reason)
        return step, reason, c

    async def _credit_avoided(self, actor: RunActor, phase: PhaseSpec, attempt: int,
                              st: _PhaseState) -> None:
        """The phase passed without the Doctor after deterministic handling: credit the
        Doctor calls that handling made unnecessary (one ``doctor_avoided`` event each)."""
        for pattern, tokens in st.pending_avoided:
            await actor.rec.event(actor.run_id, phase.id, attempt, "doctor_avoided",
                                  pattern=pattern, tokens_avoided=tokens)
        st.pending_avoided.clear()

    async def _doctor_value(self) -> float:
        measured = await self.mean_doctor_tokens() if self.mean_doctor_tokens else None
        return measured or float(self.settings.default_doctor_tokens)

    async def _mitigate(self, actor: RunActor, ws: RunWorkspace, phase: PhaseSpec, attempt: int,
                        c: Classification, st: _PhaseState) -> bool:
        if self.mitigate is None:
            return False
        python = None
        if c.pattern == "python_missing_dep":
            python = await ws.activate_venv()  # installs go into the run's own venv
        out = await self.mitigate(c, worktree=ws.worktree, python=python, env=ws.env,
                                  allowed=set(self.settings.auto_mitigate),
                                  already=st.done_actions, box=ws.box)
        if out.key:
            st.done_actions.add(out.key)  # never the same action twice in a phase
        await actor.rec.event(actor.run_id, phase.id, attempt, "mitigation", pattern=c.pattern,
                              action=c.mitigation.kind if c.mitigation else None,
                              summary=out.summary, ok=out.ok, acted=out.acted,
                              undeclared=out.undeclared)
        if out.acted and out.ok:
            st.fix_note = out.summary
        if out.undeclared:
            st.hint = (f"{out.undeclared} was missing and autopack installed it into the run's "
                       f"environment; declare it in the project's dependency manifest.")
        return out.acted and out.ok

    async def _doctor(self, actor: RunActor, ws: RunWorkspace, idx: int, phase: PhaseSpec,
                      attempt: int, failed: CommandResult, c: Classification,
                      st: _PhaseState) -> tuple[Any, str, bool]:
        """One Doctor call. Returns (next step, reason, recheck-now)."""
        from ._doctor import ask_doctor, run_fix
        from ._llm import BudgetExhausted, DoctorMalformed, LLMAuthError, LLMError

        st.doctor_calls += 1
        st.pending_avoided.clear()  # the Doctor was needed after all: nothing was avoided
        ws.doctor_calls = await actor.rec.add_doctor_call(actor.run_id, idx)
        context = await self._context(actor, ws, phase, attempt, "doctor", c)
        budget = await actor.budget(ws, phase)
        try:
            decision = await ask_doctor(self.llm, run_id=actor.run_id, phase=phase,
                                        excerpt=failed.output, classification=c,
                                        context_text=context, attempt=attempt, budget=budget)
        except DoctorMalformed as exc:
            if exc.usage is not None:
                await actor.record_usage(phase, attempt, exc.usage)
            await actor.rec.event(actor.run_id, phase.id, attempt, "doctor_called",
                                  decision="malformed", error=str(exc))
            more = phase.kind == "build" and attempt < ws.spec.limits.max_attempts
            return (Next.RETRY if more else Next.FAIL), f"Doctor answer malformed: {exc}", False
        except LLMAuthError as exc:
            from ._run import RunEnded

            raise RunEnded("failed", f"LLM authentication failed: {exc}") from None
        except BudgetExhausted as exc:
            await _budget_ended(actor, phase, attempt, "doctor", exc)
        except LLMError as exc:  # refused request, outage after retries: a failed Doctor call
            await actor.rec.event(actor.run_id, phase.id, attempt, "doctor_called",
                                  decision="error", error=str(exc))
            more = phase.kind == "build" and attempt < ws.spec.limits.max_attempts
            return (Next.RETRY if more else Next.FAIL), f"Doctor call failed: {exc}", False
        await actor.record_usage(phase, attempt, decision.usage)
        await actor.rec.event(actor.run_id, phase.id, attempt, "doctor_called",
                              decision=decision.action, rationale=decision.rationale,
                              hint=decision.hint, command=decision.command,
                              tokens=decision.usage.total_tokens,
                              context_bytes=len(context.encode()))
        match decision.action:
            case "retry_with_hint":
                st.hint = decision.hint
                if phase.kind == "build" and attempt < ws.spec.limits.max_attempts:
                    return Next.RETRY, f"Doctor: {decision.rationale}", False
                return Next.FAIL, f"Doctor suggests a retry but none is left: {decision.hint}", False
            case "run_fix":
                if not ws.venv_active:
                    await ws.activate_venv()  # whatever it installs goes into the run's venv
                result = await run_fix(decision.command, ws.cwd, ws.env, timeout=300, box=ws.box)
                await actor.rec.event(actor.run_id, phase.id, attempt, "doctor_fix",
                                      command=decision.command, exit_code=result.exit_code)
                st.fix_note = f"ran `{decision.command}`"
                return Next.RETRY, "Doctor fix applied", True
            case "skip_phase":
                return "skip", f"skipped by the Doctor: {decision.rationale}", False
            case _:
                from ._run import RunEnded

                raise RunEnded("failed", f"aborted by the Doctor: {decision.rationale}")

    async def _build(self, actor: RunActor, ws: RunWorkspace, phase: PhaseSpec, attempt: int,
                     st: _PhaseState) -> None:
        from ._builder import run_builder
        from ._drift import changed_files, outside_scope, revert_paths
        from ._run import RunEnded

        if self.llm is None:
            raise RunEnded("failed", "build phases need the Builder: no LLM is configured")
        if not getattr(self.llm, "has_key", True):
            raise RunEnded("failed", "no Anthropic API key: set ANTHROPIC_API_KEY or the "
                                     "anthropic_api_key credential (api_key_file)")
        if not ws.venv_active:
            await ws.activate_venv()
        context = await self._context(actor, ws, phase, attempt, "builder", st.previous)
        budget = await actor.budget(ws, phase)
        await actor.rec.event(actor.run_id, phase.id, attempt, "builder_started",
                              context_bytes=len(context.encode()), retry=st.hint is not None)
        usages: list[Any] = []
        result = await run_builder(
            self.llm, worktree=ws.worktree, env=ws.env, run_id=actor.run_id, phase=phase,
            context_text=context, retry_hint=st.hint, previous=st.previous,
            max_turns=int(self.settings.builder_max_turns),
            wall_s=float(self.settings.builder_attempt_wall_s),
            token_limit=self.settings.builder_attempt_tokens,
            attempt=attempt, budget=budget, on_usage=usages.append,
            command_timeout_s=min(phase.timeout_s, 600), box=ws.box, cwd=ws.cwd,
            lean=self.hardening(ws.arm), evidence=st.evidence,
            prune=_context_editing(self.settings))
        for usage in usages:
            await actor.record_usage(phase, attempt, usage)
        await actor.rec.event(actor.run_id, phase.id, attempt, "builder_finished",
                              turns=result.turns, stop_reason=result.stop_reason,
                              error=result.error, tool_calls=result.tool_calls,
                              refused=result.refused, tokens=result.total_tokens,
                              summary=result.summary[:500])
        if result.stop_reason == "auth_error":
            raise RunEnded("failed", f"LLM authentication failed: {result.error}")
        if result.stop_reason == "budget_exhausted":
            await _budget_ended(actor, phase, attempt, "builder", result.refusal or result.error)
        drift = outside_scope(await changed_files(ws.worktree), phase.scope)
        if drift:
            policy = self.settings.drift_policy
            if policy == "revert":
                await revert_paths(ws.worktree, drift)
            await actor.rec.event(actor.run_id, phase.id, attempt, "drift", files=drift[:50],
                                  action=policy)
            if policy == "fail":
                raise RunEnded("failed", f"phase {phase.id}: drift outside scope: "
                                         + ", ".join(drift[:5]))
        await self._record_edits(actor, ws, phase, attempt, st)

    async def _record_edits(self, actor: RunActor, ws: RunWorkspace, phase: PhaseSpec,
                            attempt: int, st: _PhaseState) -> None:
        """The Builder's edits of this attempt as a bounded diff (``builder_diff`` event),
        against the previous attempt's snapshot; the dashboard shows it per attempt."""
        from ._drift import GitError, edits_since

        try:
            edits = await edits_since(ws.worktree, st.last_tree)
        except (GitError, OSError) as exc:  # a diff is for people: never fails the attempt
            LOGGER.warning("run %s: cannot record the Builder's diff: %s", actor.run_id, exc)
            return
        st.last_tree = str(edits["tree"])
        await actor.rec.event(actor.run_id, phase.id, attempt, "builder_diff", **edits)

    async def _context(self, actor: RunActor, ws: RunWorkspace, phase: PhaseSpec, attempt: int,
                       role: str, failure: Classification | None) -> str:
        if not self.context_on(ws.arm):
            return ""
        if not ws.intention_recorded:
            ws.intention_recorded = await self.memory.record_intention(
                actor.run_id, str(ws.repo), ws.spec)
            if not ws.intention_recorded:  # tried again at the next prompt
                await actor.rec.event(actor.run_id, phase.id, attempt, "memory_degraded",
                                      role=role, what="record_intention")
        result = await self.memory.context_for(actor.run_id, phase.id, role, failure)
        if result.degraded:
            await actor.rec.event(actor.run_id, phase.id, attempt, "memory_degraded", role=role,
                                  what="context_for")
        return str(result.text)

    async def _remember_failure(self, actor: RunActor, ws: RunWorkspace, phase: PhaseSpec,
                                attempt: int, c: Classification, failed: CommandResult,
                                *, worked: bool) -> None:
        if self.memory is None or not self.context_on(ws.arm):
            return
        await self.memory.record_outcome(
            actor.run_id, phase.id, attempt, tried=f"attempt {attempt}: {failed.command}",
            pattern=c.pattern, evidence="; ".join(c.evidence)[:500], worked=worked)

    async def _succeeded(self, actor: RunActor, ws: RunWorkspace, phase: PhaseSpec, attempt: int,
                         st: _PhaseState) -> None:
        """Record what worked; the memory actor turns earlier failures of this phase and
        this fix into lessons for later runs on the same repository."""
        if self.memory is None or not self.context_on(ws.arm) or st.previous is None:
            return
        await self.memory.record_outcome(
            actor.run_id, phase.id, attempt, tried=f"attempt {attempt}", pattern=None,
            evidence="", worked=True, fix=st.fix_note or st.hint)


async def _budget_ended(actor: RunActor, phase: PhaseSpec, attempt: int, role: str,
                        why: Any) -> NoReturn:
    """The next call did not fit a budget: record the figures, end the run ``budget_exhausted``."""
    from ._run import RunEnded

    refusal = getattr(why, "refusal", why)
    figures = msgspec.to_builtins(refusal) if hasattr(refusal, "__struct_fields__") else {}
    message = refusal.message() if hasattr(refusal, "message") else str(why)
    await actor.rec.event(actor.run_id, phase.id, attempt, "budget_exhausted", role=role,
                          message=message, **figures)
    raise RunEnded("failed", f"budget_exhausted: {message}")


def _context_editing(settings: Any) -> bool | str:
    """The ``builder_context_editing`` setting as ``run_builder``'s ``prune``."""
    value = str(getattr(settings, "builder_context_editing", "ours"))
    return False if value == "off" else value


def _doctor_would_be_asked(f: FailureFacts) -> bool:
    """Whether, with no pattern, this failure would have gone to the Doctor (valued as if
    one is configured: tokens avoided compare against the Doctor-only design)."""
    if f.pattern is None:
        return False
    step, _ = decide(msgspec.structs.replace(f, pattern=None, mitigation_kind=None,
                                             llm_available=True))
    return step is Next.DOCTOR


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

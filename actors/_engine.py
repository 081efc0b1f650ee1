"""The run engine: every rule of a run, pure. ``(state, event) -> (state, actions)``.

No I/O, no clock, no randomness, no trio (h11's state machine is the model):
time comes in events, everything the engine knows came in an event, and every
event it consumes is a row of the run's event log. The state tables live in
:mod:`._states` (the engine's tables); the rules live here:

* attempts and their limit (``max_attempts``), an attempt interrupted by a
  crash or kill not counting (a separate bound, ``max_interruptions`` in a
  row, and the scheduler's ``run_crash_limit`` end the run as a crash loop);
* Doctor calls per phase and per run, which Doctor calls a pattern avoided;
* the failure decision (:func:`decide`): mitigate, retry with hint/evidence,
  ask the Doctor, fail, the "same failure twice" stuck rule; the Doctor's
  decision (retry, run a fix, skip, abort); the output and wall-time limits;
  budget refusals, authentication errors, the zero-tests rule.

How to drive it
---------------
::

    state = initial_state([("a", "build"), ("b", "command")], EngineLimits(...))
    state, actions = step(state, Opened(now=t0, fresh=True))
    while not isinstance(actions[0], (Finished, Stopped)):
        event = perform(actions[0])   # the shell: I/O, then the event it produced
        record(event)                 # durably, as ``to_record(event)``: a row of the log
        state, actions = step(state, event)

``step`` always answers with exactly one action, and every action but
:class:`Finished` / :class:`Stopped` is answered by exactly one event (listed in
each action's docstring). A shell may also feed :class:`Cancel`,
:class:`TimedOut`, :class:`Fatal`, :class:`BudgetExhausted` or :class:`Drained`
instead of an action's answer (an action it could not finish). Run and phase
states change only when their record comes back (:class:`RunStateChanged`,
:class:`PhaseStateChanged`), so the event log is the whole truth:
``replay(initial, log)`` rebuilds the state a crashed daemon had, and
``step(replayed, Opened(now, fresh=False))`` closes the attempt in flight as
interrupted (not counted) and says what to do next. Recorded rows of other
writers (a cancel of a queued run, the scheduler's ``actor_crashed``, a
retry's kept phases) are folded in the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Literal

import msgspec
from msgspec.structs import replace

from ._errors import EngineError, ReplayDivergence
from ._states import (
    TERMINAL_PHASE_STATES,
    TERMINAL_RUN_STATES,
    InvalidTransition,
    PhaseState,
    RunState,
    check_phase_transition,
    check_run_transition,
)

__all__ = [
    "TERMINAL_PHASE_STATES", "TERMINAL_RUN_STATES", "Action", "EngineLimits", "EngineState",
    "EngineError", "Event", "FailureFacts", "InvalidTransition", "Next", "PhaseState", "ReplayDivergence",
    "RunState", "crash_verdict", "decide", "decode", "initial_state", "replay", "step",
    "to_record", "zero_tests_verdict",
]

# ===================================================================== the failure decision
# failures that a plain retry can fix (the world changes, the code does not need to)
TRANSIENT = frozenset({"network_timeout", "rate_limited", "network_unreachable"})
ACTING_KINDS = frozenset({"install_dependency", "wait"})


class Next(StrEnum):
    MITIGATE = "mitigate"  # act (install, wait), then run the checks again in this attempt
    RETRY = "retry"  # a new attempt (Builder gets the hint)
    DOCTOR = "doctor"  # ask the Doctor
    FAIL = "fail"  # the phase fails with the reason


class FailureFacts(msgspec.Struct, frozen=True, kw_only=True):
    kind: str  # "build" | "command"
    pattern: str | None  # None: unclassified, or hardening off
    mitigation_kind: str | None  # install_dependency | wait | hint | none
    auto_allowed: bool  # pattern in the auto_mitigate setting
    already_done: bool  # this exact action was taken in this phase already
    attempt: int  # counted attempts (interrupted ones excluded)
    max_attempts: int
    same_as_previous: bool  # same failure signature as the previous attempt
    llm_available: bool
    doctor_left_phase: int
    doctor_left_run: int


def decide(f: FailureFacts) -> tuple[Next, str]:
    """The cheapest next step after a failed check, and a short reason (DESIGN.md's
    *Failure handling*: a safe action, a hint, the Doctor, limits that end the phase)."""
    last = f.attempt >= f.max_attempts
    if f.pattern is not None:
        if f.mitigation_kind in ACTING_KINDS and f.auto_allowed and not f.already_done:
            return Next.MITIGATE, f"{f.pattern}: safe action"
        if f.same_as_previous:
            return Next.FAIL, f"stuck: the same failure ({f.pattern}) twice in a row"
        if last:
            return Next.FAIL, f"attempt limit ({f.max_attempts}) reached; last failure: {f.pattern}"
        if f.kind == "build":
            return Next.RETRY, f"{f.pattern}: retry with the classifier's hint"
        if f.pattern in TRANSIENT:
            return Next.RETRY, f"{f.pattern}: transient, retry"
        return Next.FAIL, f"check failed: {f.pattern}"
    if f.same_as_previous:
        return Next.FAIL, "stuck: the same unclassified failure twice in a row"
    if last:
        return Next.FAIL, f"attempt limit ({f.max_attempts}) reached; last failure unclassified"
    if f.llm_available and f.doctor_left_phase > 0 and f.doctor_left_run > 0:
        return Next.DOCTOR, "unclassified failure: asking the Doctor"
    if f.kind == "build":
        why = "no Doctor calls left" if f.llm_available else "no Doctor available"
        return Next.RETRY, f"unclassified failure ({why}): retry with the failure excerpt"
    return Next.FAIL, "unclassified failure"


def doctor_would_be_asked(f: FailureFacts) -> bool:
    """Whether, with no pattern, this failure would have gone to the Doctor (valued as if
    one is configured: tokens avoided compare against the Doctor-only design)."""
    if f.pattern is None:
        return False
    step_, _ = decide(replace(f, pattern=None, mitigation_kind=None, llm_available=True))
    return step_ is Next.DOCTOR


def zero_tests_verdict(*, exit_code: int, timed_out: bool, output_limited: bool,
                       runner: str | None, ran: int | None,
                       allow_no_tests: bool) -> tuple[int, bool]:
    """The zero-tests rule: ``(exit_code, no_tests)`` of a check whose runner summary said
    ``runner`` ran ``ran`` tests (``None``: no summary). A runner that ran zero tests fails
    the check even when it exited 0, unless the phase allows it; then pytest's "no tests
    collected" exit status 5 counts as a pass."""
    if timed_out or output_limited or ran != 0:
        return exit_code, False
    if allow_no_tests:
        return (0 if exit_code == 5 and runner == "pytest" else exit_code), False
    return exit_code, exit_code == 0


def crash_verdict(crashes_in_row: int, limit: int, *, cancelling: bool, storage_error: bool,
                  error: str) -> tuple[str, str] | None:
    """The scheduler's rule for a run whose actor crashed ``crashes_in_row`` times in a row:
    ``(end state, reason)``, or ``None`` to start it again (after :func:`crash_backoff`)."""
    limit = max(limit, 1)
    if cancelling:
        return "cancelled", "cancelled by user"
    if storage_error:  # retrying cannot help the run: it fails cleanly
        return "failed", f"storage: {error}"
    if crashes_in_row >= limit:
        return "failed", (f"crash loop: the run's actor crashed {crashes_in_row} times in a row "
                          f"(run_crash_limit {limit}); last: {error}")
    return None


def crash_backoff(crashes_in_row: int) -> float:
    """Seconds before a crashed run's actor is started again."""
    delay: float = 0.5 * 2.0 ** (max(crashes_in_row, 1) - 1)
    return min(delay, 30.0)


# ===================================================================== limits and state
class EngineLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The run's limits (from its spec) and the daemon's crash-loop bounds."""

    max_attempts: int = 3
    wall_time_s: float = 7200.0
    phase_wall_time_s: float | None = None
    doctor_calls_per_phase: int = 2
    doctor_calls_per_run: int = 6
    output_limit_bytes: int = 64 * 1024 * 1024
    max_interruptions: int = 5  # attempts of one phase interrupted in a row: a crash loop


class Stage(StrEnum):
    """Where the open attempt of a phase is (what the engine waits for)."""

    BUILD = "build"
    CHECK = "check"
    CLASSIFY = "classify"
    MITIGATE = "mitigate"
    COUNT_DOCTOR = "count_doctor"
    DOCTOR = "doctor"
    FIX = "fix"
    CREDIT = "credit"
    COMMIT = "commit"
    END = "end"  # the attempt's outcome is known; EndAttempt records it


Outcome = Literal["succeeded", "retry", "failed", "skipped"]


class Phase(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: str
    state: PhaseState = PhaseState.QUEUED
    attempts: int = 0  # attempt numbers given out (the phases table's ``attempts``)
    interrupted: int = 0  # of those, interrupted by a crash or kill: not counted
    interrupted_in_row: int = 0
    doctor_calls: int = 0
    entered: bool = False  # phase_running recorded by this actor (since Opened)
    commit_checked: bool = False
    open: bool = False  # an attempt started and not ended
    stage: Stage = Stage.BUILD
    check: int = 0  # index of the next check of the attempt
    hint: str | None = None
    evidence: str | None = None
    signature: str | None = None  # the previous failure's
    done_actions: frozenset[str] = frozenset()
    pending_avoided: tuple[tuple[str, int], ...] = ()  # (pattern, tokens) to credit on success
    failed_command: str = ""
    failed_exit: int | None = None
    outcome: Outcome | None = None
    outcome_reason: str | None = None
    commit: str | None = None
    decision: str | None = None  # the last failure decision (Next value) and its reason
    decision_reason: str | None = None
    avoidable: int = 0  # tokens the last classification would avoid (doctor_avoidable)
    fix_command: str | None = None
    # what the last classification offered a retry (lean: evidence; else fallback hint)
    c_hint: str | None = None
    c_evidence: str | None = None
    c_fallback: str | None = None
    c_lean: bool = True
    last_pattern: str | None = None
    reason: str | None = None  # as recorded with the phase's state
    recovered: bool = False  # its commit was found on the branch (killed before recording it)

    @property
    def counted(self) -> int:
        """Attempts that count against ``max_attempts``."""
        return self.attempts - self.interrupted


class EngineState(msgspec.Struct, frozen=True, kw_only=True):
    run_state: RunState = RunState.QUEUED
    reason: str | None = None
    phases: tuple[Phase, ...] = ()
    limits: EngineLimits = msgspec.field(default_factory=EngineLimits)
    started_at: float | None = None
    fresh: bool = True  # this actor started the run (no commit can exist yet)
    opened: bool = False  # an actor is executing it (Opened seen since the last stop)
    crashes_in_row: int = 0
    verdict: tuple[RunState, str | None] | None = None  # the run's end, being recorded
    stop: str | None = None  # drained: record interrupted, then stop

    @property
    def doctor_calls(self) -> int:
        return sum(p.doctor_calls for p in self.phases)

    def time_left(self, now: float) -> float:
        """Seconds of the run's wall time left at ``now`` (at least 0.1, as the checks' timeout)."""
        start = self.started_at if self.started_at is not None else now
        left: float = self.limits.wall_time_s - (now - start)
        return max(left, 0.1)


def initial_state(phases: Sequence[tuple[str, str]], limits: EngineLimits) -> EngineState:
    """A submitted run: ``phases`` as ``(id, kind)``, all queued."""
    return EngineState(phases=tuple(Phase(id=i, kind=k) for i, k in phases), limits=limits)


# ===================================================================== events (inputs)
class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="event"):
    """Something that happened; each is (or comes from) one row of the run's event log."""


class Opened(Event, frozen=True, kw_only=True, tag="opened"):
    """An actor starts executing the run (``fresh``: it was queued). Recorded ``engine``."""

    now: float
    fresh: bool


class RunStateChanged(Event, frozen=True, kw_only=True, tag="run_state"):
    """The store recorded a run state (row ``run_<state>``)."""

    to: str
    reason: str | None = None
    at: float | None = None


class PhaseStateChanged(Event, frozen=True, kw_only=True, tag="phase_state"):
    """The store recorded a phase state (row ``phase_<state>``); ``kept``: a retry's kept phase."""

    phase: str
    to: str
    reason: str | None = None
    commit: str | None = None
    kept: bool = False


class CommitFound(Event, frozen=True, kw_only=True, tag="commit_found"):
    """The answer to :class:`FindCommit` (``sha`` ``None``: not committed). Recorded ``engine``."""

    phase: str
    sha: str | None


class AttemptStarted(Event, frozen=True, kw_only=True, tag="attempt_started"):
    phase: str
    attempt: int


class BuilderFinished(Event, frozen=True, kw_only=True, tag="builder_finished"):
    phase: str
    stop_reason: str | None = None
    error: str | None = None


class DriftFound(Event, frozen=True, kw_only=True, tag="drift"):
    phase: str
    files: list[str] = []
    action: str = "revert"  # the drift_policy setting: revert | fail


class CheckFinished(Event, frozen=True, kw_only=True, tag="check_finished"):
    """One check ended (after the zero-tests rule). ``last``: the attempt's last check."""

    phase: str
    command: str
    exit_code: int
    last: bool
    now: float
    timed_out: bool = False
    output_limited: bool = False
    no_tests: bool = False


class Classified(Event, frozen=True, kw_only=True, tag="classified"):
    """The failed check classified, with every fact the decision needs."""

    phase: str
    pattern: str | None
    signature: str
    mitigation_kind: str | None = None
    mitigation_hint: str | None = None
    action_key: str | None = None
    auto_allowed: bool = False
    llm_available: bool = False
    doctor_value: int = 0  # tokens a Doctor call costs (measured mean)
    lean: bool = True  # hardened: the retry gets the evidence, not the output's tail
    retry_evidence: str | None = None
    fallback_hint: str | None = None
    decision: str | None = None  # as recorded (replay checks it)


class MitigationDone(Event, frozen=True, kw_only=True, tag="mitigation"):
    phase: str
    ok: bool
    acted: bool
    key: str | None = None
    hint: str | None = None  # for the next attempt (an undeclared dependency)


class DoctorAsked(Event, frozen=True, kw_only=True, tag="doctor_asked"):
    """A Doctor call is counted (before it is made: the limits are durable)."""

    phase: str


class DoctorDecided(Event, frozen=True, kw_only=True, tag="doctor_decided"):
    phase: str
    action: str  # retry_with_hint | run_fix | skip_phase | abort_run
    rationale: str = ""
    hint: str | None = None
    command: str | None = None


class DoctorFailed(Event, frozen=True, kw_only=True, tag="doctor_failed"):
    phase: str
    why: str  # malformed | error | auth
    error: str = ""


class FixDone(Event, frozen=True, kw_only=True, tag="fix_done"):
    phase: str
    exit_code: int


class AvoidedCredited(Event, frozen=True, kw_only=True, tag="avoided"):
    phase: str
    pattern: str
    tokens_avoided: int


class AttemptEnded(Event, frozen=True, kw_only=True, tag="attempt_ended"):
    phase: str
    attempt: int
    outcome: str
    reason: str | None = None
    commit: str | None = None


class BudgetExhausted(Event, frozen=True, kw_only=True, tag="budget_exhausted"):
    phase: str | None
    message: str


class Fatal(Event, frozen=True, kw_only=True, tag="fatal"):
    """The run cannot go on (no LLM, no checks, install failed, disk...): it fails."""

    reason: str


class Cancel(Event, frozen=True, kw_only=True, tag="cancel"):
    reason: str = "cancelled by user"


class TimedOut(Event, frozen=True, kw_only=True, tag="timed_out"):
    """A wall-time limit fired (``scope``: ``phase`` or ``run``)."""

    scope: str
    phase: str | None = None


class Drained(Event, frozen=True, kw_only=True, tag="drained"):
    """The daemon is stopping: leave the run resumable."""


class ActorCrashed(Event, frozen=True, kw_only=True, tag="actor_crashed"):
    error: str = ""


AnyEvent = (Opened | RunStateChanged | PhaseStateChanged | CommitFound | AttemptStarted
            | BuilderFinished | DriftFound | CheckFinished | Classified | MitigationDone
            | DoctorAsked | DoctorDecided | DoctorFailed | FixDone | AvoidedCredited
            | AttemptEnded | BudgetExhausted | Fatal | Cancel | TimedOut | Drained | ActorCrashed)


# ===================================================================== actions (outputs)
class Action(msgspec.Struct, frozen=True, kw_only=True, tag_field="action"):
    """What the shell must do next."""


class SetRunState(Action, frozen=True, kw_only=True, tag="set_run_state"):
    """Record the run state → :class:`RunStateChanged`."""

    to: str
    reason: str | None = None


class SetPhaseState(Action, frozen=True, kw_only=True, tag="set_phase_state"):
    """Record a phase state → :class:`PhaseStateChanged` (``resumed``/``recovered``: notes)."""

    idx: int
    to: str
    reason: str | None = None
    commit: str | None = None
    resumed: bool = False
    recovered: bool = False


class FindCommit(Action, frozen=True, kw_only=True, tag="find_commit"):
    """Look for the phase's commit (``Autopack-Phase`` trailer) → :class:`CommitFound`."""

    idx: int


class BeginAttempt(Action, frozen=True, kw_only=True, tag="begin_attempt"):
    """Record a new attempt → :class:`AttemptStarted`."""

    idx: int


class RunBuilder(Action, frozen=True, kw_only=True, tag="run_builder"):
    """The Builder's turn (then the drift check) → :class:`BuilderFinished` (and
    :class:`DriftFound` when files outside the scope changed) or :class:`BudgetExhausted`."""

    idx: int
    attempt: int
    hint: str | None
    evidence: str | None


class RunCheck(Action, frozen=True, kw_only=True, tag="run_check"):
    """Run check number ``n`` of the attempt (0: detect the list first) → :class:`CheckFinished`."""

    idx: int
    attempt: int
    n: int


class Classify(Action, frozen=True, kw_only=True, tag="classify"):
    """Classify the failed check → :class:`Classified` (recorded with the engine's decision)."""

    idx: int
    attempt: int


class Mitigate(Action, frozen=True, kw_only=True, tag="mitigate"):
    """Take the classification's safe action → :class:`MitigationDone`."""

    idx: int
    attempt: int


class CountDoctorCall(Action, frozen=True, kw_only=True, tag="count_doctor_call"):
    """Record one Doctor call of the phase → :class:`DoctorAsked`."""

    idx: int
    attempt: int


class AskDoctor(Action, frozen=True, kw_only=True, tag="ask_doctor"):
    """The Doctor call → :class:`DoctorDecided` / :class:`DoctorFailed` / :class:`BudgetExhausted`."""

    idx: int
    attempt: int


class RunFix(Action, frozen=True, kw_only=True, tag="run_fix"):
    """Run the Doctor's fix command → :class:`FixDone`."""

    idx: int
    attempt: int
    command: str


class CreditAvoided(Action, frozen=True, kw_only=True, tag="credit_avoided"):
    """Record one Doctor call a pattern made unnecessary → :class:`AvoidedCredited`."""

    idx: int
    attempt: int
    pattern: str
    tokens: int


class Commit(Action, frozen=True, kw_only=True, tag="commit"):
    """All checks passed: commit the phase → :class:`AttemptEnded` (``succeeded``, the sha)."""

    idx: int
    attempt: int


class EndAttempt(Action, frozen=True, kw_only=True, tag="end_attempt"):
    """Record the attempt's end (and what memory should learn) → :class:`AttemptEnded`."""

    idx: int
    attempt: int
    outcome: str
    reason: str | None


class Finished(Action, frozen=True, kw_only=True, tag="finished"):
    """The run ended: clean up. No event follows."""

    state: str
    reason: str | None


class Stopped(Action, frozen=True, kw_only=True, tag="stopped"):
    """The run is interrupted (the daemon stops): leave it resumable. No event follows."""


AnyAction = (SetRunState | SetPhaseState | FindCommit | BeginAttempt | RunBuilder | RunCheck
             | Classify | Mitigate | CountDoctorCall | AskDoctor | RunFix | CreditAvoided
             | Commit | EndAttempt | Finished | Stopped)


# ===================================================================== step
def step(state: EngineState, event: Event) -> tuple[EngineState, list[Action]]:
    """Apply ``event``; return the new state and the one action to perform next.
    Raises :class:`InvalidTransition` for a recorded state change the tables refuse."""
    state = _apply(state, event)
    return state, [_plan(state)]


def _apply(s: EngineState, e: Event) -> EngineState:  # noqa: C901 - one match, one case per event
    match e:
        case Opened():
            phases = tuple(_interrupt(p) for p in s.phases)
            # a recorded end (cancel, fatal, budget) holds across restarts
            s = replace(s, phases=phases, fresh=e.fresh, opened=True, stop=None)
            loop = next((p for p in phases
                         if p.interrupted_in_row >= s.limits.max_interruptions), None)
            if loop is not None and s.run_state not in TERMINAL_RUN_STATES:
                s = _end(s, RunState.FAILED,
                         f"crash loop: phase {loop.id} was interrupted {loop.interrupted_in_row} "
                         "times in a row (by a crash or kill of the daemon)")
            return s
        case RunStateChanged():
            target = check_run_transition(s.run_state, e.to) if e.to != s.run_state else s.run_state
            s = replace(s, run_state=target, reason=e.reason)
            if target is RunState.RUNNING and s.started_at is None:
                s = replace(s, started_at=e.at)
            if target is RunState.INTERRUPTED:  # the daemon stopped: in-flight attempts too
                s = replace(s, phases=tuple(_interrupt(p) for p in s.phases), opened=False)
            if target in TERMINAL_RUN_STATES:
                s = replace(s, verdict=(target, e.reason), opened=False)
            return s
        case PhaseStateChanged():
            idx, p = _phase(s, e.phase)
            # a retry's kept phase is born succeeded
            pstate = PhaseState(e.to) if e.kept else check_phase_transition(p.state, e.to)
            p = replace(p, state=pstate, entered=p.entered or pstate is PhaseState.RUNNING,
                        commit=e.commit or p.commit, reason=e.reason)
            if pstate in TERMINAL_PHASE_STATES:
                p = replace(p, open=False, outcome=None)
            s = _set(s, idx, p)
            if pstate is PhaseState.FAILED and s.verdict is None and s.opened:
                s = replace(s, verdict=(RunState.FAILED, f"phase {p.id}: {e.reason}"))
            return s
        case ActorCrashed():
            return replace(s, crashes_in_row=s.crashes_in_row + 1, opened=False,
                           phases=tuple(_interrupt(p) for p in s.phases))
        case Cancel():
            return _end(s, RunState.CANCELLED, e.reason)
        case Fatal():
            return _end(s, RunState.FAILED, e.reason)
        case Drained():
            return replace(s, stop="daemon stopping")
        case BudgetExhausted():
            return _end(s, RunState.FAILED, f"budget_exhausted: {e.message}")
        case TimedOut():
            return _timed_out(s, e)
        case _:
            return _apply_phase(s, e)


def _apply_phase(s: EngineState, e: Event) -> EngineState:  # noqa: C901
    """Events about the attempt in flight of one phase."""
    phase_id = getattr(e, "phase", None)
    if not isinstance(phase_id, str):
        raise EngineError(f"event {type(e).__name__} names no phase")
    idx, p = _phase(s, phase_id)
    lim = s.limits
    match e:
        case CommitFound():
            p = replace(p, commit_checked=True, commit=e.sha or p.commit)
            if e.sha is not None:
                p = replace(p, outcome="succeeded", outcome_reason=None, open=False,
                            recovered=True)
        case AttemptStarted():
            p = _interrupt(p)  # an attempt left open before this one was interrupted
            p = replace(p, attempts=e.attempt, open=True, check=0, outcome=None,
                        failed_exit=None, failed_command="",
                        stage=Stage.BUILD if p.kind == "build" else Stage.CHECK,
                        fix_command=None, commit_checked=True)
        case BuilderFinished():
            if e.stop_reason == "auth_error":
                return _end(s, RunState.FAILED, f"LLM authentication failed: {e.error}")
            if e.stop_reason != "budget_exhausted":  # BudgetExhausted follows
                p = replace(p, stage=Stage.CHECK, check=0)
        case DriftFound():
            if e.action == "fail":
                return _end(s, RunState.FAILED, f"phase {p.id}: drift outside scope: "
                                                 + ", ".join(e.files[:5]))
        case CheckFinished():
            if e.output_limited:
                p = _ended(p, "failed", f"output limit: `{e.command}` printed more than "
                                        f"{lim.output_limit_bytes} bytes and was stopped")
            elif e.timed_out and s.time_left(e.now) <= 0.2:
                return _end(s, RunState.FAILED, _wall_reason(lim))
            elif e.exit_code == 0 and not e.no_tests:
                if e.last:
                    p = replace(p, stage=Stage.CREDIT if p.pending_avoided else Stage.COMMIT)
                else:
                    p = replace(p, check=p.check + 1)
            else:
                p = replace(p, stage=Stage.CLASSIFY, failed_command=e.command,
                            failed_exit=e.exit_code)
        case Classified():
            p = _classified(s, p, e)
        case MitigationDone():
            p = replace(p, done_actions=p.done_actions | {e.key} if e.key else p.done_actions,
                        hint=e.hint or p.hint)
            if e.acted and e.ok:
                p = replace(p, stage=Stage.CHECK, check=0)
            elif p.kind == "build" and p.counted < lim.max_attempts:
                p = _retry(p, "mitigation failed")
            else:
                p = _ended(p, "failed", f"{_pattern_of(p)}: mitigation failed")
        case DoctorAsked():
            p = replace(p, doctor_calls=p.doctor_calls + 1, pending_avoided=(),
                        stage=Stage.DOCTOR)
        case DoctorDecided():
            match e.action:
                case "retry_with_hint":
                    p = replace(p, hint=e.hint)
                    if p.kind == "build" and p.counted < lim.max_attempts:
                        p = _retry(p, f"Doctor: {e.rationale}")
                    else:
                        p = _ended(p, "failed",
                                   f"Doctor suggests a retry but none is left: {e.hint}")
                case "run_fix":
                    p = replace(p, stage=Stage.FIX, fix_command=e.command or "")
                case "skip_phase":
                    p = _ended(p, "skipped", f"skipped by the Doctor: {e.rationale}")
                case _:
                    return _end(s, RunState.FAILED, f"aborted by the Doctor: {e.rationale}")
        case DoctorFailed():
            if e.why == "auth":
                return _end(s, RunState.FAILED, f"LLM authentication failed: {e.error}")
            what = "Doctor answer malformed" if e.why == "malformed" else "Doctor call failed"
            if p.kind == "build" and p.counted < lim.max_attempts:
                p = _retry(p, f"{what}: {e.error}")
            else:
                p = _ended(p, "failed", f"{what}: {e.error}")
        case FixDone():
            p = replace(p, stage=Stage.CHECK, check=0, fix_command=None)
        case AvoidedCredited():
            p = replace(p, pending_avoided=p.pending_avoided[1:])
            if not p.pending_avoided:
                p = replace(p, stage=Stage.COMMIT)
        case AttemptEnded():
            p = replace(p, open=False, interrupted_in_row=0, outcome=_outcome(e.outcome),
                        outcome_reason=e.reason, commit=e.commit or p.commit)
            s = replace(s, crashes_in_row=0)
        case _:
            raise EngineError(f"unexpected event {type(e).__name__}")
    return _set(s, idx, p)


def _classified(s: EngineState, p: Phase, e: Classified) -> Phase:
    lim = s.limits
    facts = FailureFacts(
        kind=p.kind, pattern=e.pattern, mitigation_kind=e.mitigation_kind,
        auto_allowed=e.auto_allowed,
        already_done=e.action_key is not None and e.action_key in p.done_actions,
        attempt=p.counted, max_attempts=lim.max_attempts,
        same_as_previous=e.signature == p.signature, llm_available=e.llm_available,
        doctor_left_phase=lim.doctor_calls_per_phase - p.doctor_calls,
        doctor_left_run=lim.doctor_calls_per_run - s.doctor_calls)
    nxt, reason = decide(facts)
    if e.decision is not None and e.decision != nxt.value:
        raise ReplayDivergence(f"classified: recorded decision {e.decision!r}, "
                               f"the engine decides {nxt.value!r} ({reason})")
    # a Doctor call is avoided only if, without the pattern, one would have been made (not
    # when the failure ends the phase anyway) and the deterministic step is taken; it is
    # credited later, when an attempt passes without the Doctor
    avoidable = e.doctor_value if doctor_would_be_asked(facts) else 0
    pending = p.pending_avoided
    if avoidable and e.pattern is not None and nxt in (Next.MITIGATE, Next.RETRY):
        pending = (*pending, (e.pattern, avoidable))
    p = replace(p, signature=e.signature, pending_avoided=pending, decision=nxt.value,
                decision_reason=reason, avoidable=avoidable, c_hint=e.mitigation_hint,
                c_evidence=e.retry_evidence, c_fallback=e.fallback_hint, c_lean=e.lean,
                last_pattern=e.pattern)
    if nxt is not Next.MITIGATE:
        p = replace(p, hint=e.mitigation_hint)
    match nxt:
        case Next.MITIGATE:
            return replace(p, stage=Stage.MITIGATE)
        case Next.DOCTOR:
            return replace(p, stage=Stage.COUNT_DOCTOR)
        case Next.RETRY:
            return _retry(p, reason)
        case _:
            return _ended(p, "failed", reason)


def _retry(p: Phase, reason: str) -> Phase:
    """End the attempt for a retry; the next one is told what the failure was."""
    hint = p.hint or p.c_hint
    if p.c_lean:
        p = replace(p, hint=hint, evidence=p.c_evidence)
    else:
        p = replace(p, hint=hint or p.c_fallback, evidence=None)
    return replace(p, stage=Stage.END, outcome="retry", outcome_reason=reason)


def _ended(p: Phase, outcome: Outcome, reason: str) -> Phase:
    if outcome == "failed" and p.failed_exit is not None and p.stage is not Stage.CHECK:
        reason = f"{reason} (`{p.failed_command}` exit {p.failed_exit})"
    return replace(p, stage=Stage.END, outcome=outcome, outcome_reason=reason)


def _outcome(value: str) -> Outcome | None:
    match value:
        case "succeeded" | "retry" | "failed" | "skipped":
            return value
        case _:
            return None


def _pattern_of(p: Phase) -> str:
    return p.last_pattern or "unclassified"


def _interrupt(p: Phase) -> Phase:
    """Close ``p``'s open attempt as interrupted: it does not count against max_attempts."""
    if not p.open:
        return replace(p, entered=False, commit_checked=False)
    return replace(p, open=False, interrupted=p.interrupted + 1,
                   interrupted_in_row=p.interrupted_in_row + 1, entered=False,
                   commit_checked=False, outcome=None, stage=Stage.BUILD)


def _timed_out(s: EngineState, e: TimedOut) -> EngineState:
    lim = s.limits
    if e.scope == "phase" and e.phase is not None:
        idx, p = _phase(s, e.phase)
        limit = lim.phase_wall_time_s or 0.0
        return _set(s, idx, replace(p, stage=Stage.END, outcome="failed",
                                    outcome_reason=f"phase wall time limit of {limit:g} s reached"))
    return _end(s, RunState.FAILED, _wall_reason(lim))


def _wall_reason(lim: EngineLimits) -> str:
    return f"wall time limit of {lim.wall_time_s:g} s reached"


def _end(s: EngineState, state: RunState, reason: str | None) -> EngineState:
    if s.verdict is not None:  # the first reason wins
        return s
    return replace(s, verdict=(state, reason))


def _phase(s: EngineState, phase_id: str) -> tuple[int, Phase]:
    for i, p in enumerate(s.phases):
        if p.id == phase_id:
            return i, p
    raise EngineError(f"no phase {phase_id!r} in the run")


def _set(s: EngineState, idx: int, p: Phase) -> EngineState:
    return replace(s, phases=(*s.phases[:idx], p, *s.phases[idx + 1:]))


# ===================================================================== plan: what next
def _plan(s: EngineState) -> Action:  # noqa: C901 - the order of a run, top to bottom
    if s.run_state in TERMINAL_RUN_STATES:
        return Finished(state=s.run_state.value, reason=s.reason)
    if s.run_state is RunState.INTERRUPTED and not s.opened:
        return Stopped()
    if s.verdict is not None:
        return _closing(s, *s.verdict)
    if s.stop is not None:
        if s.run_state is RunState.INTERRUPTED:
            return Stopped()
        return SetRunState(to=RunState.INTERRUPTED.value, reason=s.stop)
    if s.run_state is not RunState.RUNNING:
        return SetRunState(to=RunState.RUNNING.value,
                           reason=None if s.fresh else "resumed after restart")
    for idx, p in enumerate(s.phases):
        if p.state in (PhaseState.SUCCEEDED, PhaseState.SKIPPED):
            continue
        if p.state in (PhaseState.FAILED, PhaseState.CANCELLED):
            return _closing(s, RunState(p.state.value), p.reason)
        return _plan_phase(s, idx, p)
    return _closing(s, RunState.SUCCEEDED, None)


def _plan_phase(s: EngineState, idx: int, p: Phase) -> Action:  # noqa: C901
    lim = s.limits
    if p.outcome is not None and not p.open:  # the attempt ended: record the phase's end
        match p.outcome:
            case "succeeded":
                if p.state is PhaseState.QUEUED:
                    return SetPhaseState(idx=idx, to="running")
                return SetPhaseState(idx=idx, to="succeeded", commit=p.commit,
                                     recovered=p.recovered)
            case "failed" | "skipped":
                return SetPhaseState(idx=idx, to=p.outcome, reason=p.outcome_reason)
            case _:
                pass  # retry: a new attempt below
    if not s.fresh and not p.commit_checked and not p.open:
        return FindCommit(idx=idx)
    if not p.entered:
        return SetPhaseState(idx=idx, to="running", resumed=p.state is PhaseState.RUNNING)
    if not p.open:
        if p.counted >= lim.max_attempts:
            return SetPhaseState(idx=idx, to="failed",
                                 reason=f"attempt limit ({lim.max_attempts}) reached")
        return BeginAttempt(idx=idx)
    a = p.attempts
    match p.stage:
        case Stage.BUILD:
            return RunBuilder(idx=idx, attempt=a, hint=p.hint, evidence=p.evidence)
        case Stage.CHECK:
            return RunCheck(idx=idx, attempt=a, n=p.check)
        case Stage.CLASSIFY:
            return Classify(idx=idx, attempt=a)
        case Stage.MITIGATE:
            return Mitigate(idx=idx, attempt=a)
        case Stage.COUNT_DOCTOR:
            return CountDoctorCall(idx=idx, attempt=a)
        case Stage.DOCTOR:
            return AskDoctor(idx=idx, attempt=a)
        case Stage.FIX:
            return RunFix(idx=idx, attempt=a, command=p.fix_command or "")
        case Stage.CREDIT:
            pattern, tokens = p.pending_avoided[0]
            return CreditAvoided(idx=idx, attempt=a, pattern=pattern, tokens=tokens)
        case Stage.COMMIT:
            return Commit(idx=idx, attempt=a)
        case _:
            return EndAttempt(idx=idx, attempt=a, outcome=p.outcome or "failed",
                              reason=p.outcome_reason)


def _closing(s: EngineState, state: RunState, reason: str | None) -> Action:
    """The run ends ``state``: its open phases end first (one record at a time), then the run."""
    for idx, p in enumerate(s.phases):
        if p.state is PhaseState.RUNNING:
            return SetPhaseState(idx=idx, to="cancelled" if state is RunState.CANCELLED
                                 else "failed", reason=reason)
        if p.state is PhaseState.QUEUED and state is not RunState.SUCCEEDED:
            return SetPhaseState(idx=idx, to="cancelled",
                                 reason=f"run {state.value} before this phase")
    return SetRunState(to=state.value, reason=reason)


def next_action(state: EngineState) -> Action:
    """What to do in ``state`` (the action ``step`` returned last)."""
    return _plan(state)


# ===================================================================== records and replay
Record = tuple[str, str | None, int | None, Mapping[str, object]]  # kind, phase, attempt, payload
_ENGINE_KIND = "engine"  # rows of engine events with no kind of their own
_DECODE = msgspec.json.Decoder(AnyEvent)
_ENCODE = msgspec.json.Encoder()
_OWN_KIND: dict[type[Event], str] = {
    AttemptStarted: "attempt_started", BuilderFinished: "builder_finished", DriftFound: "drift",
    CheckFinished: "check_finished", Classified: "classified", MitigationDone: "mitigation",
    DoctorAsked: "doctor_asked", FixDone: "doctor_fix", AvoidedCredited: "doctor_avoided",
    AttemptEnded: "attempt_ended", BudgetExhausted: "budget_exhausted",
    ActorCrashed: "actor_crashed",
}


def to_record(event: Event) -> Record:
    """The row that records ``event``: ``(kind, phase id, attempt, payload)``, read back by
    :func:`decode`. The shell may add descriptive fields to the payload (``logs`` and the
    dashboard read them); run/phase state changes are written by the store's own calls
    with exactly these kinds and fields."""
    payload = msgspec.to_builtins(event)
    assert isinstance(payload, dict)
    phase = payload.pop("phase", None)
    attempt = payload.get("attempt")
    match event:
        case RunStateChanged():
            return f"run_{event.to}", None, None, {"reason": event.reason, "at": event.at}
        case PhaseStateChanged():
            extra = {"kept_from": "?"} if event.kept else {}
            return (f"phase_{event.to}", event.phase, None,
                    {"reason": event.reason, "commit": event.commit, **extra})
        case DoctorDecided():
            return "doctor_called", event.phase, None, {
                "decision": event.action, "rationale": event.rationale, "hint": event.hint,
                "command": event.command}
        case DoctorFailed():
            return "doctor_called", event.phase, None, {"decision": event.why,
                                                         "error": event.error}
        case _:
            pass
    kind = _OWN_KIND.get(type(event), _ENGINE_KIND)
    if kind == _ENGINE_KIND:
        if phase is not None:
            payload["phase"] = phase
        return kind, _str(phase), None, payload
    payload.pop("event", None)
    return kind, _str(phase), attempt if isinstance(attempt, int) else None, payload


def decode(kind: str, phase_id: str | None, attempt: int | None,
           payload: Mapping[str, object]) -> Event | None:
    """The engine event a stored row records, or ``None`` for rows the engine does not read."""
    p = dict(payload)
    if kind.startswith("run_") and kind[4:] in RunState.__members__.values():
        return RunStateChanged(to=kind[4:], reason=_str(p.get("reason")), at=_float(p.get("at")))
    if kind.startswith("phase_") and kind[6:] in PhaseState.__members__.values():
        assert phase_id is not None
        return PhaseStateChanged(phase=phase_id, to=kind[6:], reason=_str(p.get("reason")),
                                 commit=_str(p.get("commit")), kept=bool(p.get("kept_from")))
    if kind == "doctor_called":
        assert phase_id is not None
        decision = str(p.get("decision"))
        if decision in ("malformed", "error", "auth"):
            return DoctorFailed(phase=phase_id, why=decision, error=str(p.get("error") or ""))
        return DoctorDecided(phase=phase_id, action=decision,
                             rationale=str(p.get("rationale") or ""), hint=_str(p.get("hint")),
                             command=_str(p.get("command")))
    if kind == "classified" and "signature" not in p:
        return None  # the install step's classification: not a phase decision
    if kind == _ENGINE_KIND:
        return _convert(p)
    for cls, own in _OWN_KIND.items():
        if own == kind:
            fields = set(cls.__struct_fields__)
            if "phase" in fields:
                p["phase"] = phase_id
            if "attempt" in fields and "attempt" not in p:
                p["attempt"] = attempt
            return _convert({"event": cls.__struct_config__.tag, **{
                k: v for k, v in p.items() if k in fields}})
    return None


def _convert(p: Mapping[str, object]) -> Event | None:
    try:
        ev = _DECODE.decode(_ENCODE.encode(p))
    except msgspec.ValidationError:
        return None
    return ev if isinstance(ev, Event) else None


def replay(initial: EngineState, records: Iterable[Record]) -> EngineState:
    """Fold the recorded rows of a run into ``initial``: the state the run had when its
    last row was written. Raises :class:`ReplayDivergence` (with the row's position) when a
    recorded decision or state change is not what the engine makes of the rows before it."""
    state = initial
    for n, (kind, phase_id, attempt, payload) in enumerate(records, 1):
        event = decode(kind, phase_id, attempt, payload)
        if event is None:
            continue
        try:
            state = _apply(state, event)
        except (ReplayDivergence, InvalidTransition, EngineError) as exc:
            raise ReplayDivergence(f"row {n} ({kind}, phase {phase_id}, attempt {attempt}): "
                                   f"{exc}") from None
    return state


def _str(v: object) -> str | None:
    return None if v is None else str(v)


def _float(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) else None

"""Deterministic simulation of the run engine (FoundationDB / TigerBeetle style).

One seed drives one simulated run: a random plan and limits, and a random world
that answers every action the engine asks for (checks that pass or fail, the
classifier's verdicts, mitigations, Doctor decisions and errors, 429-style
model failures, budget refusals), while faults are injected between any two
events: ``kill -9`` of the daemon (the live state is thrown away and rebuilt by
replaying the durable log, as the daemon's recovery does), a crash of the run's
actor, a kill between a phase's commit and its record, a graceful drain, a
user's cancel, wall-time limits. Nothing here does I/O; a seed always gives the
same run.

Invariants checked on every run:

* every run ends (in a bounded number of steps, whatever the faults);
* no phase is committed twice (the world's branch holds one commit per phase);
* counted attempts never exceed ``max_attempts``, and a phase failing on the attempt
  limit finished exactly ``max_attempts`` attempts (interrupted ones do not count); Doctor calls never exceed their
  per-phase and per-run limits;
* every recorded run and phase state change is allowed by the state tables;
* replay equals live: folding the recorded log gives the state the live engine
  has, after every fault and at the end;
* the end is consistent: every phase terminal, a succeeded run's phases all
  succeeded or skipped (each with its commit), a cancel ends the run cancelled
  unless another end was already decided.

Run one seed with its trace::

    python tests/engine_sim.py --seed 1234 --trace

or many: ``python tests/engine_sim.py --runs 10000`` (prints the count and seconds).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autopack.actors import _engine as eng
from autopack.actors._states import PHASE_TRANSITIONS, RUN_TRANSITIONS, PhaseState, RunState

PATTERNS = [None, None, "python_syntax_error", "python_missing_dep", "network_timeout",
            "test_failure", "no_tests_collected", "rate_limited", "missing_command"]
MITIGATIONS = [None, "install_dependency", "wait", "hint", "none"]
MAX_STEPS = 5000


class SimFailure(AssertionError):
    """An invariant broke; ``seed`` replays it."""

    def __init__(self, seed: int, message: str, trace: list[str]) -> None:
        self.seed, self.trace = seed, trace
        super().__init__(f"seed {seed}: {message}\n  replay: {replay_command(seed)}")


def replay_command(seed: int) -> str:
    return f"python tests/engine_sim.py --seed {seed} --trace"


@dataclass
class World:
    """What outlives a crash: the run's durable log and its branch."""

    rng: random.Random
    phases: list[tuple[str, str]]
    checks: dict[str, int]
    crash_limit: int = 3  # the scheduler's run_crash_limit
    log: list[eng.Record] = field(default_factory=list)
    commits: dict[str, int] = field(default_factory=dict)  # phase id -> commits made
    attempt_counter: dict[str, int] = field(default_factory=dict)  # durable, like the store's
    now: float = 1000.0
    faults: int = 0
    cancel_sent: bool = False
    trace: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # event and action types, faults: coverage


@dataclass
class Knobs:
    """The seed's fault and outcome rates (each run draws its own)."""

    p_check_fail: float
    p_kill: float
    p_actor_crash: float
    p_cancel: float
    p_drain: float
    p_timeout: float
    p_budget: float
    p_model_error: float
    max_faults: int


def simulate(seed: int, *, trace: bool = False) -> dict[str, Any]:
    """Run one seeded simulation; raise :class:`SimFailure` if an invariant breaks.
    Returns a summary (end state, steps, faults) for statistics."""
    rng = random.Random(seed)
    n = rng.randint(1, 4)
    phases = [(f"p{i}", rng.choice(["build", "build", "command"])) for i in range(n)]
    limits = eng.EngineLimits(
        max_attempts=rng.randint(1, 4), wall_time_s=rng.choice([60.0, 600.0, 7200.0]),
        phase_wall_time_s=rng.choice([None, None, 30.0]),
        doctor_calls_per_phase=rng.randint(0, 2), doctor_calls_per_run=rng.randint(0, 4),
        max_interruptions=rng.randint(1, 5))
    crash_limit = rng.randint(1, 4)  # the scheduler's run_crash_limit setting
    knobs = Knobs(p_check_fail=rng.choice([0.1, 0.4, 0.7]), p_kill=rng.choice([0.0, 0.02, 0.08]),
                  p_actor_crash=rng.choice([0.0, 0.01, 0.04]), p_cancel=rng.choice([0.0, 0.005]),
                  p_drain=rng.choice([0.0, 0.01]), p_timeout=rng.choice([0.0, 0.003]),
                  p_budget=rng.choice([0.0, 0.01]), p_model_error=rng.choice([0.0, 0.05]),
                  max_faults=rng.randint(0, 12))
    world = World(rng=rng, phases=phases, checks={p: rng.randint(1, 3) for p, _ in phases},
                  crash_limit=crash_limit)
    initial = eng.initial_state(phases, limits)

    def fail(message: str) -> SimFailure:
        return SimFailure(seed, message, world.trace)

    def note(text: str) -> None:
        if trace:
            world.trace.append(text)

    state, action = _open(initial, world, fresh=True, note=note, fail=fail)
    steps = 0
    while True:
        steps += 1
        if steps > MAX_STEPS:
            raise fail(f"the run did not end in {MAX_STEPS} steps (last action {action!r})")
        if isinstance(action, eng.Finished):
            break
        if isinstance(action, eng.Stopped):  # drained: the daemon starts again later
            world.now += rng.uniform(1, 30)
            state, action = _restart(initial, world, state, note=note, fail=fail)
            continue
        fault = _pick_fault(rng, world, knobs, state)
        if fault is not None:
            world.seen.add(f"fault {fault}")
        if fault == "kill":  # kill -9 before the action's answer is recorded
            _maybe_perform_lost(world, action, note)
            state, action = _restart(initial, world, state, note=note, fail=fail, live_ok=True)
            continue
        if fault == "actor_crash":
            _maybe_perform_lost(world, action, note)
            state, action = _actor_crash(initial, world, state, note=note, fail=fail)
            continue
        if fault is not None:
            events = [_fault_event(fault, state, action, world)]
        else:
            events = _answer(action, world, knobs, state, fail)
        for event in events:
            state, actions = _feed(state, event, world, note, fail)
            action = actions[0]
        _check_limits(state, fail)
    _check_end(initial, state, world, fail)
    return {"state": state.run_state.value, "steps": steps, "faults": world.faults,
            "reason": state.reason, "seen": world.seen}


# ----------------------------------------------------------------------------- the shell
def _feed(state: eng.EngineState, event: eng.Event, world: World, note: Callable[[str], None],
          fail: Callable[[str], SimFailure]) -> tuple[eng.EngineState, list[eng.Action]]:
    """Record ``event`` durably, then step the engine (write-ahead, as the shell does)."""
    record = eng.to_record(event)
    back = eng.decode(*record)
    if back is None:
        raise fail(f"recorded {event!r} as {record!r}, which decodes to nothing")
    world.log.append(record)
    world.seen.add(type(event).__name__)
    if isinstance(event, eng.CommitFound) and event.sha is not None:
        world.seen.add("recovered commit")
    _check_transition(state, event, fail)
    try:
        state, actions = eng.step(state, event)
    except (eng.EngineError, eng.InvalidTransition) as exc:
        raise fail(f"engine refused {event!r}: {exc}") from None
    if len(actions) != 1:
        raise fail(f"step answered {len(actions)} actions to {event!r}")
    if isinstance(event, eng.Classified):  # the shell records the decision with it
        kind, phase_id, attempt, payload = world.log[-1]
        p = next(p for p in state.phases if p.id == event.phase)
        world.log[-1] = (kind, phase_id, attempt, {**payload, "decision": p.decision})
    world.seen.add(type(actions[0]).__name__)
    note(f"{type(event).__name__:<18} -> {actions[0]!r}")
    return state, actions


def _open(initial: eng.EngineState, world: World, *, fresh: bool, note: Callable[[str], None],
          fail: Callable[[str], SimFailure],
          state: eng.EngineState | None = None) -> tuple[eng.EngineState, eng.Action]:
    state = state if state is not None else initial
    state, actions = _feed(state, eng.Opened(now=world.now, fresh=fresh), world, note, fail)
    return state, actions[0]


def _replayed(initial: eng.EngineState, world: World,
              fail: Callable[[str], SimFailure]) -> eng.EngineState:
    try:
        return eng.replay(initial, world.log)
    except eng.ReplayDivergence as exc:
        raise fail(f"replay diverged: {exc}") from None


def _restart(initial: eng.EngineState, world: World, live: eng.EngineState, *,
             note: Callable[[str], None], fail: Callable[[str], SimFailure],
             live_ok: bool = False) -> tuple[eng.EngineState, eng.Action]:
    """The daemon starts again: the state is whatever the log replays to (replay must equal
    the live state it replaces); recovery marks a running run interrupted, then reopens it."""
    world.faults += 1
    note("--- daemon restarts (state rebuilt from the log)")
    state = _replayed(initial, world, fail)
    if state != live:
        raise fail(f"replay differs from live:\n  live   {live!r}\n  replay {state!r}")
    if state.run_state in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED):
        return state, eng.next_action(state)
    if state.run_state is RunState.RUNNING:  # the daemon's reconcile at start
        state, _ = _feed(state, eng.RunStateChanged(to="interrupted", reason="daemon restarted",
                                                    at=world.now), world, note, fail)
    return _open(initial, world, fresh=state.run_state is RunState.QUEUED, note=note, fail=fail,
                 state=state)


def _actor_crash(initial: eng.EngineState, world: World, live: eng.EngineState, *,
                 note: Callable[[str], None],
                 fail: Callable[[str], SimFailure]) -> tuple[eng.EngineState, eng.Action]:
    """The run's actor raised: the scheduler records it and starts a new actor from the log
    (or ends the run when it keeps crashing)."""
    world.faults += 1
    note("--- actor crashed")
    state = _replayed(initial, world, fail)
    if state != live:
        raise fail(f"replay differs from live after an actor crash:\n  live   {live!r}\n"
                   f"  replay {state!r}")
    if state.run_state in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED):
        return state, eng.next_action(state)
    state, _ = _feed(state, eng.ActorCrashed(error="RuntimeError: simulated"), world, note, fail)
    verdict = eng.crash_verdict(state.crashes_in_row, world.crash_limit, cancelling=False,
                                storage_error=False, error="RuntimeError: simulated")
    if verdict is not None:  # the scheduler ends the run directly, one record at a time
        return _end_directly(state, world, verdict, note, fail)
    return _open(initial, world, fresh=state.run_state is RunState.QUEUED, note=note, fail=fail,
                 state=state)


def _end_directly(state: eng.EngineState, world: World, verdict: tuple[str, str],
                  note: Callable[[str], None],
                  fail: Callable[[str], SimFailure]) -> tuple[eng.EngineState, eng.Action]:
    end, reason = verdict
    for p in state.phases:
        if p.state is PhaseState.RUNNING:
            state, _ = _feed(state, eng.PhaseStateChanged(
                phase=p.id, to="cancelled" if end == "cancelled" else "failed", reason=reason),
                world, note, fail)
        elif p.state is PhaseState.QUEUED:
            state, _ = _feed(state, eng.PhaseStateChanged(
                phase=p.id, to="cancelled", reason=f"run {end} before this phase"),
                world, note, fail)
    state, actions = _feed(state, eng.RunStateChanged(to=end, reason=reason, at=world.now),
                           world, note, fail)
    return state, actions[0]


# ----------------------------------------------------------------------------- the world
def _pick_fault(rng: random.Random, world: World, k: Knobs, state: eng.EngineState) -> str | None:
    if world.faults >= k.max_faults:
        return None
    r = rng.random()
    for name, p in (("kill", k.p_kill), ("actor_crash", k.p_actor_crash),
                    ("cancel", k.p_cancel), ("drain", k.p_drain), ("timeout", k.p_timeout)):
        if r < p:
            if name in ("cancel", "drain", "timeout"):
                if state.run_state is not RunState.RUNNING:
                    return None
                world.faults += 1
            return name
        r -= p
    return None


def _fault_event(fault: str, state: eng.EngineState, action: eng.Action,
                 world: World) -> eng.Event:
    if fault == "cancel":
        world.cancel_sent = True
        return eng.Cancel(reason="cancelled by user")
    if fault == "drain":
        return eng.Drained()
    idx = getattr(action, "idx", None)
    if (idx is not None and state.limits.phase_wall_time_s
            and world.rng.random() < 0.5 and state.phases[idx].open):
        return eng.TimedOut(scope="phase", phase=state.phases[idx].id)
    return eng.TimedOut(scope="run")


def _maybe_perform_lost(world: World, action: eng.Action, note: Callable[[str], None]) -> None:
    """A kill can land after the action's effect and before its record: a commit made and
    not recorded (recovery must find it), a Doctor call made, an attempt counter bumped."""
    if isinstance(action, eng.Commit) and world.rng.random() < 0.5:
        pid = world.phases[action.idx][0]
        world.commits[pid] = world.commits.get(pid, 0) + 1
        note(f"--- {pid} committed, then killed before its record")


def _answer(action: eng.Action, world: World, k: Knobs, state: eng.EngineState,
            fail: Callable[[str], SimFailure]) -> list[eng.Event]:
    rng = world.rng
    world.now += rng.uniform(0.01, 2.0)
    match action:
        case eng.SetRunState(to=to, reason=reason):
            return [eng.RunStateChanged(to=to, reason=reason, at=world.now)]
        case eng.SetPhaseState(idx=idx, to=to, reason=reason, commit=commit):
            return [eng.PhaseStateChanged(phase=world.phases[idx][0], to=to, reason=reason,
                                          commit=commit)]
        case eng.FindCommit(idx=idx):
            pid = world.phases[idx][0]
            return [eng.CommitFound(phase=pid, sha=f"sha-{pid}" if world.commits.get(pid) else None)]
        case eng.BeginAttempt(idx=idx):
            pid = world.phases[idx][0]
            n = world.attempt_counter[pid] = world.attempt_counter.get(pid, 0) + 1
            return [eng.AttemptStarted(phase=pid, attempt=n)]
        case eng.RunBuilder(idx=idx):
            pid = world.phases[idx][0]
            if rng.random() < 0.005:
                return [eng.Fatal(reason="build phases need the Builder: no LLM is configured")]
            if rng.random() < k.p_budget:
                return [eng.BudgetExhausted(phase=pid, message="run budget of 1000 tokens")]
            if rng.random() < k.p_model_error * 0.1:
                return [eng.BuilderFinished(phase=pid, stop_reason="auth_error", error="401")]
            out: list[eng.Event] = [eng.BuilderFinished(
                phase=pid, stop_reason=rng.choice(["end_turn", "end_turn", "max_turns", "error"]))]
            if rng.random() < 0.05:
                out.append(eng.DriftFound(phase=pid, files=["outside.txt"],
                                          action=rng.choice(["revert", "revert", "fail"])))
            return out
        case eng.RunCheck(idx=idx, n=n):
            pid = world.phases[idx][0]
            if n == 0 and rng.random() < 0.005:
                return [eng.Fatal(reason=f"phase {pid}: no checks given and none detected")]
            failed = rng.random() < k.p_check_fail
            return [eng.CheckFinished(
                phase=pid, command=f"check-{n}", exit_code=rng.choice([1, 2, 127]) if failed else 0,
                last=n >= world.checks[pid] - 1, now=world.now,
                timed_out=failed and rng.random() < 0.05,
                output_limited=failed and rng.random() < 0.03,
                no_tests=not failed and rng.random() < 0.03)]
        case eng.Classify(idx=idx):
            pid = world.phases[idx][0]
            pattern = rng.choice(PATTERNS)
            kind = rng.choice(MITIGATIONS) if pattern else None
            key = f"{kind}:{pattern}" if kind in ("install_dependency", "wait") else None
            return [eng.Classified(
                phase=pid, pattern=pattern, signature=rng.choice(["s1", "s2", "s3", "s4"]),
                mitigation_kind=kind, mitigation_hint="do it" if kind else None, action_key=key,
                auto_allowed=rng.random() < 0.7, llm_available=rng.random() < 0.8,
                doctor_value=rng.choice([0, 800]), lean=rng.random() < 0.8,
                retry_evidence="E: line 3", fallback_hint="tail")]
        case eng.Mitigate(idx=idx):
            acted = rng.random() < 0.8
            return [eng.MitigationDone(phase=world.phases[idx][0], ok=acted and rng.random() < 0.7,
                                       acted=acted, key=f"k{rng.randint(0, 3)}")]
        case eng.CountDoctorCall(idx=idx):
            return [eng.DoctorAsked(phase=world.phases[idx][0])]
        case eng.AskDoctor(idx=idx):
            pid = world.phases[idx][0]
            r = rng.random()
            if r < k.p_budget:
                return [eng.BudgetExhausted(phase=pid, message="phase budget")]
            if r < k.p_budget + k.p_model_error:  # 429s past the retries, 5xx, a bad answer
                return [eng.DoctorFailed(phase=pid, why=rng.choice(["error", "malformed", "error",
                                                                    "auth"]), error="429")]
            action_ = rng.choice(["retry_with_hint", "retry_with_hint", "run_fix", "skip_phase",
                                  "abort_run"])
            return [eng.DoctorDecided(phase=pid, action=action_, rationale="because",
                                      hint="try x" if action_ == "retry_with_hint" else None,
                                      command="make fix" if action_ == "run_fix" else None)]
        case eng.RunFix(idx=idx):
            return [eng.FixDone(phase=world.phases[idx][0], exit_code=rng.choice([0, 1]))]
        case eng.CreditAvoided(idx=idx, pattern=pattern, tokens=tokens):
            return [eng.AvoidedCredited(phase=world.phases[idx][0], pattern=pattern,
                                        tokens_avoided=tokens)]
        case eng.Commit(idx=idx, attempt=attempt):
            pid = world.phases[idx][0]
            if world.commits.get(pid):
                raise fail(f"phase {pid} committed twice")
            world.commits[pid] = 1
            return [eng.AttemptEnded(phase=pid, attempt=attempt, outcome="succeeded",
                                     commit=f"sha-{pid}")]
        case eng.EndAttempt(idx=idx, attempt=attempt, outcome=outcome, reason=reason):
            return [eng.AttemptEnded(phase=world.phases[idx][0], attempt=attempt,
                                     outcome=outcome, reason=reason)]
        case _:
            raise fail(f"the world has no answer to {action!r}")


# ----------------------------------------------------------------------------- invariants
def _check_transition(state: eng.EngineState, event: eng.Event,
                      fail: Callable[[str], SimFailure]) -> None:
    """Checked against the tables directly (not through the engine's own check)."""
    if isinstance(event, eng.RunStateChanged) and event.to != state.run_state.value:
        if RunState(event.to) not in RUN_TRANSITIONS[state.run_state]:
            raise fail(f"run transition {state.run_state.value} -> {event.to} recorded")
    if isinstance(event, eng.PhaseStateChanged) and not event.kept:
        p = next(p for p in state.phases if p.id == event.phase)
        if PhaseState(event.to) not in PHASE_TRANSITIONS[p.state]:
            raise fail(f"phase {p.id} transition {p.state.value} -> {event.to} recorded")


def _check_limits(state: eng.EngineState, fail: Callable[[str], SimFailure]) -> None:
    lim = state.limits
    for p in state.phases:
        if p.counted > lim.max_attempts:
            raise fail(f"phase {p.id}: {p.counted} counted attempts > max_attempts "
                       f"{lim.max_attempts}")
        if p.doctor_calls > lim.doctor_calls_per_phase:
            raise fail(f"phase {p.id}: {p.doctor_calls} Doctor calls > "
                       f"{lim.doctor_calls_per_phase} per phase")
    if state.doctor_calls > lim.doctor_calls_per_run:
        raise fail(f"{state.doctor_calls} Doctor calls > {lim.doctor_calls_per_run} per run")


def _check_end(initial: eng.EngineState, state: eng.EngineState, world: World,
               fail: Callable[[str], SimFailure]) -> None:
    if state.run_state not in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED):
        raise fail(f"finished in non-terminal state {state.run_state.value}")
    final = _replayed(initial, world, fail)
    if final != state:
        raise fail(f"replay differs from live at the end:\n  live   {state!r}\n"
                   f"  replay {final!r}")
    for p in state.phases:
        if p.state not in (PhaseState.SUCCEEDED, PhaseState.FAILED, PhaseState.SKIPPED,
                           PhaseState.CANCELLED):
            raise fail(f"run ended with phase {p.id} {p.state.value}")
        if p.state is PhaseState.SUCCEEDED and world.commits.get(p.id) != 1:
            raise fail(f"phase {p.id} succeeded with {world.commits.get(p.id, 0)} commits")
        ended = sum(1 for kind, pid, _, _ in world.log if kind == "attempt_ended" and pid == p.id)
        if p.reason and "attempt limit (" in p.reason and ended != state.limits.max_attempts:
            # interrupted attempts (a kill, a crash) do not count; every finished one does
            raise fail(f"phase {p.id} hit the attempt limit after {ended} finished attempts "
                       f"(max_attempts {state.limits.max_attempts})")
    if state.run_state is RunState.SUCCEEDED:
        bad = [p.id for p in state.phases if p.state not in (PhaseState.SUCCEEDED,
                                                             PhaseState.SKIPPED)]
        if bad:
            raise fail(f"run succeeded with phases {bad} not succeeded")
    if world.cancel_sent and state.run_state is RunState.SUCCEEDED:
        raise fail("a cancelled run succeeded")


# ----------------------------------------------------------------------------- command line
def run_many(first: int, count: int) -> tuple[dict[str, int], set[str]]:
    """Simulate seeds ``first ..``; return the runs per end state and what was covered."""
    ends: dict[str, int] = {}
    seen: set[str] = set()
    for seed in range(first, first + count):
        out = simulate(seed)
        ends[out["state"]] = ends.get(out["state"], 0) + 1
        seen |= out["seen"]
    return ends, seen


def uncovered(seen: set[str]) -> set[str]:
    """Engine events, actions and faults the simulation never produced (each should be)."""
    want = {t.__name__ for t in (*eng.AnyEvent.__args__, *eng.AnyAction.__args__)}
    want |= {"recovered commit", "fault kill", "fault actor_crash", "fault cancel",
             "fault drain", "fault timeout"}
    return want - seen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, help="run this one seed")
    ap.add_argument("--trace", action="store_true", help="print every event and action")
    ap.add_argument("--runs", type=int, default=10_000, help="seeds to run (default 10000)")
    ap.add_argument("--first", type=int, default=0, help="first seed (default 0)")
    args = ap.parse_args(argv)
    if args.seed is not None:
        try:
            out = simulate(args.seed, trace=args.trace)
        except SimFailure as exc:
            print("\n".join(exc.trace), file=sys.stderr)
            print(exc, file=sys.stderr)
            return 1
        print(out)
        return 0
    started = time.perf_counter()
    try:
        ends, seen = run_many(args.first, args.runs)
    except SimFailure as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{args.runs} simulated runs in {time.perf_counter() - started:.1f} s: {ends}")
    missing = uncovered(seen)
    if missing:
        print(f"never produced: {', '.join(sorted(missing))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The run engine (actors/_engine.py): transitions, decisions, limits, crash bounds, replay.

Each test drives the pure engine with a scripted shell: every action is answered with
the event a real shell would produce; every event is also kept as its stored row, so
each test can check that replaying the rows rebuilds the live state exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from autopack.actors import _engine as E
from msgspec.structs import replace


def limits(**kw):
    return E.EngineLimits(**{"max_attempts": 3, "doctor_calls_per_phase": 2,
                             "doctor_calls_per_run": 6, **kw})


class Shell:
    """Answers the engine's actions. ``checks``: exit codes per attempt and check, consumed
    in order; ``classify``: the pattern per failed check (``None``: unclassified)."""

    def __init__(self, *, phases=(("a", "build"),), lim=None, checks=None, classify=None,
                 doctor=None, mitigation_ok=True, commit_found=None, kill_at=None):
        self.state = E.initial_state(list(phases), lim or limits())
        self.initial = self.state
        self.rows: list[E.Record] = []
        self.events: list[E.Event] = []
        self.checks = list(checks or [])
        self.classify = list(classify or [])
        self.doctor = list(doctor or [])
        self.mitigation_ok = mitigation_ok
        self.commit_found = commit_found
        self.now = 1000.0
        self.actions: list[E.Action] = []

    def feed(self, event: E.Event) -> E.Action:
        self.rows.append(E.to_record(event))
        self.events.append(event)
        self.state, actions = E.step(self.state, event)
        assert len(actions) == 1
        self.actions.append(actions[0])
        return actions[0]

    def run(self, first: E.Event | None = None, *, until: Callable[[E.Action], bool] | None = None,
            limit: int = 500) -> E.Action:
        action = self.feed(first or E.Opened(now=self.now, fresh=True))
        for _ in range(limit):
            if isinstance(action, E.Finished | E.Stopped) or (until and until(action)):
                return action
            action = self.feed(self.answer(action))
        raise AssertionError("the engine did not end: " + repr(self.actions[-10:]))

    def answer(self, a: E.Action) -> E.Event:  # noqa: C901 - one case per action
        s = self.state
        self.now += 1
        match a:
            case E.SetRunState():
                return E.RunStateChanged(to=a.to, reason=a.reason, at=self.now)
            case E.SetPhaseState():
                return E.PhaseStateChanged(phase=s.phases[a.idx].id, to=a.to, reason=a.reason,
                                           commit=a.commit)
            case E.FindCommit():
                return E.CommitFound(phase=s.phases[a.idx].id, sha=self.commit_found)
            case E.BeginAttempt():
                return E.AttemptStarted(phase=s.phases[a.idx].id,
                                        attempt=s.phases[a.idx].attempts + 1)
            case E.RunBuilder():
                return E.BuilderFinished(phase=s.phases[a.idx].id, stop_reason="end_turn")
            case E.RunCheck():
                code = self.checks.pop(0) if self.checks else 0
                return E.CheckFinished(phase=s.phases[a.idx].id, command="pytest -q",
                                       exit_code=code, last=True, now=self.now)
            case E.Classify():
                pattern = self.classify.pop(0) if self.classify else None
                kind = "install_dependency" if pattern == "python_missing_dep" else "hint"
                return E.Classified(
                    phase=s.phases[a.idx].id, pattern=pattern,
                    signature=f"{pattern}:{len(self.rows)}", mitigation_kind=kind,
                    mitigation_hint=f"fix {pattern}" if pattern else None,
                    action_key=f"install:{pattern}" if kind == "install_dependency" else None,
                    auto_allowed=True, llm_available=True, doctor_value=1500)
            case E.Mitigate():
                return E.MitigationDone(phase=s.phases[a.idx].id, ok=self.mitigation_ok,
                                        acted=True, key="install:python_missing_dep")
            case E.CountDoctorCall():
                return E.DoctorAsked(phase=s.phases[a.idx].id)
            case E.AskDoctor():
                d = self.doctor.pop(0) if self.doctor else {"action": "retry_with_hint",
                                                             "hint": "try harder"}
                if "why" in d:
                    return E.DoctorFailed(phase=s.phases[a.idx].id, **d)
                return E.DoctorDecided(phase=s.phases[a.idx].id, rationale="r", **d)
            case E.RunFix():
                return E.FixDone(phase=s.phases[a.idx].id, exit_code=0)
            case E.CreditAvoided():
                return E.AvoidedCredited(phase=s.phases[a.idx].id, pattern=a.pattern,
                                         tokens_avoided=a.tokens)
            case E.Commit():
                return E.AttemptEnded(phase=s.phases[a.idx].id, attempt=a.attempt,
                                      outcome="succeeded", commit=f"sha{a.idx}")
            case E.EndAttempt():
                return E.AttemptEnded(phase=s.phases[a.idx].id, attempt=a.attempt,
                                      outcome=a.outcome, reason=a.reason)
        raise AssertionError(f"unexpected action {a!r}")

    def replayed(self) -> E.EngineState:
        return E.replay(self.initial, self.rows)

    def kinds(self, cls: type) -> list:
        return [a for a in self.actions if isinstance(a, cls)]


def test_a_passing_run_commits_each_phase_once_and_replays_equal():
    sh = Shell(phases=[("a", "build"), ("b", "command")])
    end = sh.run()
    assert end == E.Finished(state="succeeded", reason=None)
    assert [p.state for p in sh.state.phases] == ["succeeded", "succeeded"]
    assert [p.commit for p in sh.state.phases] == ["sha0", "sha1"]
    assert len(sh.kinds(E.Commit)) == 2
    assert len(sh.kinds(E.RunBuilder)) == 1  # a command phase has no Builder
    assert sh.replayed() == sh.state


def test_classified_failure_retries_with_the_hint_then_passes():
    sh = Shell(checks=[1, 0], classify=["test_failure"])
    assert sh.run().state == "succeeded"
    builders = sh.kinds(E.RunBuilder)
    assert [b.hint for b in builders] == [None, "fix test_failure"]
    assert sh.state.phases[0].attempts == 2
    assert sh.state.doctor_calls == 0
    # the Doctor call the pattern made unnecessary is credited once the phase passes
    assert [(c.pattern, c.tokens) for c in sh.kinds(E.CreditAvoided)] == [("test_failure", 1500)]
    assert sh.replayed() == sh.state


def test_same_failure_twice_is_stuck():
    sh = Shell(checks=[1, 1], classify=["test_failure", "test_failure"])
    # a fixed signature: the same failure
    sh.answer_orig = sh.answer

    def same_sig(a):
        ev = sh.answer_orig(a)
        return replace(ev, signature="same") if isinstance(ev, E.Classified) else ev

    sh.answer = same_sig
    end = sh.run()
    assert end.state == "failed"
    assert "stuck: the same failure (test_failure) twice in a row" in end.reason
    assert "(`pytest -q` exit 1)" in end.reason
    assert sh.kinds(E.CreditAvoided) == []  # never passed: nothing avoided


def test_attempt_limit_ends_the_phase_and_the_run():
    sh = Shell(lim=limits(max_attempts=2), checks=[1, 1, 1], classify=["a", "b", "c"],
               phases=[("a", "build"), ("b", "build")])
    end = sh.run()
    assert end.state == "failed"
    assert end.reason.startswith("phase a: attempt limit (2) reached; last failure: b")
    assert [p.state for p in sh.state.phases] == ["failed", "cancelled"]
    assert sh.state.phases[1].reason == "run failed before this phase"
    assert sh.replayed() == sh.state


def test_mitigation_reruns_checks_in_the_same_attempt():
    sh = Shell(checks=[1, 0], classify=["python_missing_dep"])
    assert sh.run().state == "succeeded"
    assert len(sh.kinds(E.Mitigate)) == 1
    assert sh.state.phases[0].attempts == 1
    assert sh.state.phases[0].done_actions == frozenset({"install:python_missing_dep"})


def test_failed_mitigation_retries_a_build_phase_and_fails_a_command_phase():
    sh = Shell(checks=[1, 0], classify=["python_missing_dep"], mitigation_ok=False)
    assert sh.run().state == "succeeded"
    assert sh.state.phases[0].attempts == 2
    sh = Shell(phases=[("c", "command")], checks=[1], classify=["python_missing_dep"],
               mitigation_ok=False)
    end = sh.run()
    assert end.reason == "phase c: python_missing_dep: mitigation failed (`pytest -q` exit 1)"


@pytest.mark.parametrize(("doctor", "state", "needle"), [
    pytest.param([{"action": "skip_phase"}], "succeeded", None, id="skip"),
    pytest.param([{"action": "abort_run"}], "failed", "aborted by the Doctor: r", id="abort"),
    pytest.param([{"action": "run_fix", "command": "make fix"}], "succeeded", None, id="fix"),
    pytest.param([{"why": "malformed", "error": "bad json"}], "succeeded", None,
                 id="malformed-retries"),
    pytest.param([{"why": "error", "error": "529"}], "succeeded", None, id="error-retries"),
])
def test_doctor_decisions(doctor, state, needle):
    sh = Shell(checks=[1, 0], classify=[None], doctor=doctor)
    end = sh.run()
    assert end.state == state
    if needle:
        assert needle in end.reason
    assert sh.state.doctor_calls == 1
    if doctor[0].get("action") == "skip_phase":
        assert sh.state.phases[0].state == "skipped"
        assert sh.state.phases[0].reason == "skipped by the Doctor: r"
    if doctor[0].get("action") == "run_fix":
        assert sh.kinds(E.RunFix) == [E.RunFix(idx=0, attempt=1, command="make fix")]
        assert sh.state.phases[0].attempts == 1  # a fix re-runs the checks in the attempt
    assert sh.replayed() == sh.state


def test_doctor_limits_per_phase_and_run():
    sh = Shell(lim=limits(max_attempts=5, doctor_calls_per_phase=1), checks=[1, 1, 0],
               classify=[None, None])
    assert sh.run().state == "succeeded"
    assert sh.state.doctor_calls == 1  # the second unclassified failure: no call left
    assert "no Doctor calls left" in sh.state.phases[0].decision_reason
    sh = Shell(lim=limits(doctor_calls_per_run=1), phases=[("a", "build"), ("b", "build")],
               checks=[1, 0, 1, 0], classify=[None, None])
    assert sh.run().state == "succeeded"
    assert sh.state.doctor_calls == 1
    assert [p.doctor_calls for p in sh.state.phases] == [1, 0]


def test_doctor_retry_on_the_last_attempt_fails():
    sh = Shell(lim=limits(max_attempts=1), checks=[1], classify=[None])
    end = sh.run()
    assert "attempt limit (1) reached; last failure unclassified" in end.reason


def test_output_limit_and_wall_time():
    sh = Shell(lim=limits(output_limit_bytes=2048))
    sh.feed(E.Opened(now=0.0, fresh=True))
    action = sh.run(sh.answer(sh.actions[-1]), until=lambda a: isinstance(a, E.RunCheck))
    end = sh.run(E.CheckFinished(phase="a", command="yes", exit_code=-9, last=True, now=5,
                                 output_limited=True))
    assert end.reason == ("phase a: output limit: `yes` printed more than 2048 bytes and "
                          "was stopped")
    assert isinstance(action, E.RunCheck)
    sh = Shell(lim=limits(wall_time_s=60))
    sh.run(until=lambda a: isinstance(a, E.RunCheck))
    end = sh.run(E.CheckFinished(phase="a", command="sleep 99", exit_code=-9, last=True,
                                 now=sh.state.started_at + 60, timed_out=True))
    assert end.reason == "wall time limit of 60 s reached"
    sh = Shell(lim=limits(phase_wall_time_s=5))
    sh.run(until=lambda a: isinstance(a, E.RunCheck))
    end = sh.run(E.TimedOut(scope="phase", phase="a"))
    assert end.reason == "phase a: phase wall time limit of 5 s reached"
    assert sh.replayed() == sh.state


@pytest.mark.parametrize(("event", "state", "reason"), [
    pytest.param(E.Cancel(), "cancelled", "cancelled by user", id="cancel"),
    pytest.param(E.Fatal(reason="no checks"), "failed", "no checks", id="fatal"),
    pytest.param(E.BudgetExhausted(phase="a", message="run tokens"), "failed",
                 "budget_exhausted: run tokens", id="budget"),
    pytest.param(E.BuilderFinished(phase="a", stop_reason="auth_error", error="401"), "failed",
                 "LLM authentication failed: 401", id="auth"),
    pytest.param(E.DriftFound(phase="a", files=["x.py"], action="fail"), "failed",
                 "phase a: drift outside scope: x.py", id="drift-fail"),
])
def test_run_endings_close_open_phases(event, state, reason):
    sh = Shell(phases=[("a", "build"), ("b", "build")])
    sh.run(until=lambda a: isinstance(a, E.RunBuilder))
    end = sh.run(event)
    assert end == E.Finished(state=state, reason=reason)
    want_a = "cancelled" if state == "cancelled" else "failed"
    assert [p.state for p in sh.state.phases] == [want_a, "cancelled"]
    assert sh.replayed() == sh.state


def test_drained_stops_resumable():
    sh = Shell(phases=[("a", "command"), ("b", "command")])
    sh.run(until=lambda a: isinstance(a, E.SetPhaseState) and a.idx == 1 and a.to == "running")
    end = sh.run(E.Drained())
    assert end == E.Stopped()
    assert sh.state.run_state == "interrupted"
    assert sh.state.reason == "daemon stopping"


def crash_and_recover(sh: Shell) -> None:
    """kill -9: the live state is lost; the log is replayed and a new actor opens the run."""
    sh.state = sh.replayed()
    sh.rows.append(("run_interrupted", None, None, {"reason": "daemon died while running"}))
    sh.state = E.replay(sh.initial, sh.rows)


def test_an_interrupted_attempt_does_not_count():
    sh = Shell(lim=limits(max_attempts=1), phases=[("a", "command")])
    for _ in range(3):  # killed mid-check three times
        sh.run(until=lambda a: isinstance(a, E.RunCheck))
        crash_and_recover(sh)
        sh.feed(E.Opened(now=sh.now, fresh=False))
    end = sh.run(sh.answer(sh.actions[-1]))
    assert end.state == "succeeded"
    p = sh.state.phases[0]
    assert (p.attempts, p.interrupted, p.counted) == (4, 3, 1)
    # a resumed run first looks for the phase's commit, and re-enters the phase
    assert any(isinstance(a, E.FindCommit) for a in sh.actions)
    assert sh.replayed() == sh.state


def test_interruptions_in_a_row_end_the_run_as_a_crash_loop():
    sh = Shell(lim=limits(max_interruptions=3), phases=[("a", "command")])
    sh.run(until=lambda a: isinstance(a, E.RunCheck))
    for _ in range(2):
        crash_and_recover(sh)
        sh.run(E.Opened(now=sh.now, fresh=False), until=lambda a: isinstance(a, E.RunCheck))
    crash_and_recover(sh)
    end = sh.run(E.Opened(now=sh.now, fresh=False))
    assert end.state == "failed"
    assert end.reason.startswith("crash loop: phase a was interrupted 3 times in a row")
    assert sh.state.phases[0].counted == 0


def test_a_commit_found_on_resume_is_recorded_not_redone():
    sh = Shell(phases=[("a", "build")])
    sh.run(until=lambda a: isinstance(a, E.Commit))
    crash_and_recover(sh)
    sh.commit_found = "abc"
    end = sh.run(E.Opened(now=sh.now, fresh=False))
    assert end.state == "succeeded"
    assert sh.state.phases[0].commit == "abc"
    last_phase = [a for a in sh.kinds(E.SetPhaseState) if a.to == "succeeded"]
    assert last_phase[-1].recovered is True
    assert len(sh.kinds(E.Commit)) == 1


def test_actor_crash_rows_interrupt_and_count():
    sh = Shell(phases=[("a", "command")])
    sh.run(until=lambda a: isinstance(a, E.RunCheck))
    sh.rows.append(E.to_record(E.ActorCrashed(error="boom")))
    sh.state = sh.replayed()
    assert sh.state.crashes_in_row == 1
    assert sh.state.phases[0].interrupted == 1
    end = sh.run(E.Opened(now=sh.now, fresh=False))
    assert end.state == "succeeded"
    assert sh.state.crashes_in_row == 0


@pytest.mark.parametrize(("n", "kw", "expected"), [
    pytest.param(1, {}, None, id="retry"),
    pytest.param(3, {}, "crash loop: the run's actor crashed 3 times in a row", id="limit"),
    pytest.param(1, {"cancelling": True}, "cancelled by user", id="cancelling"),
    pytest.param(1, {"storage_error": True}, "storage: boom", id="storage"),
])
def test_crash_verdict(n, kw, expected):
    verdict = E.crash_verdict(n, 3, error="boom", **{"cancelling": False, "storage_error": False,
                                                     **kw})
    if expected is None:
        assert verdict is None
        assert E.crash_backoff(n) == 0.5
    else:
        assert verdict is not None
        assert expected in verdict[1]


def test_refused_transitions_raise_precisely():
    state = E.initial_state([("a", "build")], limits())
    with pytest.raises(E.InvalidTransition, match="'queued' -> 'succeeded'"):
        E.step(state, E.RunStateChanged(to="succeeded"))
    with pytest.raises(E.InvalidTransition, match="phase: no transition 'queued' -> 'succeeded'"):
        E.step(state, E.PhaseStateChanged(phase="a", to="succeeded"))


def test_replay_names_the_first_divergence():
    sh = Shell(checks=[1, 0], classify=["test_failure"])
    sh.run()
    rows = [(k, ph, at, {**p, "decision": "doctor"}) if k == "classified" else (k, ph, at, p)
            for k, ph, at, p in sh.rows]
    with pytest.raises(E.ReplayDivergence, match=r"row \d+ \(classified, phase a.*'doctor'"):
        E.replay(sh.initial, rows)


@pytest.mark.parametrize(("kw", "expected"), [
    pytest.param(dict(exit_code=0, runner="unittest", ran=0), (0, True), id="zero-ran-exit-0"),
    pytest.param(dict(exit_code=5, runner="pytest", ran=0), (5, False), id="pytest-5-fails-anyway"),
    pytest.param(dict(exit_code=5, runner="pytest", ran=0, allow_no_tests=True), (0, False),
                 id="allowed"),
    pytest.param(dict(exit_code=0, runner="pytest", ran=3), (0, False), id="ran-some"),
    pytest.param(dict(exit_code=0, runner=None, ran=None), (0, False), id="no-summary"),
    pytest.param(dict(exit_code=0, runner="unittest", ran=0, timed_out=True), (0, False),
                 id="timed-out"),
])
def test_zero_tests_rule(kw, expected):
    args = {"timed_out": False, "output_limited": False, "allow_no_tests": False, **kw}
    assert E.zero_tests_verdict(**args) == expected

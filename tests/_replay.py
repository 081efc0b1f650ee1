"""Replay every stored run of a state dir through the run engine (issue 14).

Each run's recorded events are folded into the engine (``_engine.replay``) and the
state it reaches must equal the stored one: the run's state, each phase's state,
attempt count and Doctor calls. Used by the ``daemon_factory`` fixture's teardown,
so every store any daemon test produced is checked.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import msgspec
from autopack.actors import _engine as E
from autopack.actors._run import initial_state
from autopack.protocol import SpecError, validate_spec


def _initial(spec_text: str | None, phases: list[sqlite3.Row]) -> E.EngineState:
    """The run's initial engine state, built as the daemon's recovery builds it
    (``actors._run.initial_state``); a spec that no longer validates (the daemon ends such a
    run directly) gets the stored phases and default limits."""
    try:
        return initial_state(validate_spec(msgspec.json.decode(spec_text or "{}")))
    except (SpecError, msgspec.DecodeError, msgspec.ValidationError, ValueError):
        return E.initial_state([(p["id"], p["kind"]) for p in phases], E.EngineLimits())


def replay_problems(db_path: Path) -> list[str]:
    """One line per run whose replayed state differs from the stored one (its first
    divergence); ``[]`` when every run replays exactly."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    problems: list[str] = []
    try:
        verdict = [tuple(row) for row in db.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError:
        verdict = []
    if verdict != [("ok",)]:  # a store a test corrupted on purpose: the daemon refused it
        db.close()
        return []
    try:
        for run in db.execute("SELECT id, state, spec FROM runs ORDER BY seq").fetchall():
            phases = db.execute("SELECT id, kind, state, attempts, doctor_calls FROM phases"
                                " WHERE run_id = ? ORDER BY idx", (run["id"],)).fetchall()
            initial = _initial(run["spec"], phases)
            rows = [(r["kind"], r["phase_id"], r["attempt"], json.loads(r["payload"] or "{}"))
                    for r in db.execute("SELECT kind, phase_id, attempt, payload FROM events"
                                        " WHERE run_id = ? ORDER BY id", (run["id"],))]
            try:
                state = E.replay(initial, rows)
            except E.ReplayDivergence as exc:
                problems.append(f"run {run['id']}: {exc}")
                continue
            diff = _first_difference(run, phases, state)
            if diff:
                problems.append(f"run {run['id']}: {diff}")
    finally:
        db.close()
    return problems


def _first_difference(run: sqlite3.Row, phases: list[sqlite3.Row], state: E.EngineState) -> str:
    if state.run_state.value != run["state"]:
        return f"run state: stored {run['state']!r}, replayed {state.run_state.value!r}"
    for stored, replayed in zip(phases, state.phases, strict=True):
        for what, mine in (("state", replayed.state.value), ("attempts", replayed.attempts),
                           ("doctor_calls", replayed.doctor_calls)):
            if stored[what] != mine:
                return (f"phase {stored['id']} {what}: stored {stored[what]!r}, "
                        f"replayed {mine!r}")
    return ""

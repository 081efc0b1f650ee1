"""The run and phase state machines: one table each, one place.

States are enums whose values are the lower-case strings of the external
contract. ``check_transition`` raises :class:`InvalidTransition` for anything
not in the table, so a bug shows up as a precise error instead of a run in a
state nobody expected.
"""

from __future__ import annotations

from enum import StrEnum

from ._errors import InvalidTransition as InvalidTransition


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


class PhaseState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


RUN_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.QUEUED: frozenset({RunState.RUNNING, RunState.CANCELLED, RunState.FAILED}),
    RunState.RUNNING: frozenset(
        {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.INTERRUPTED}
    ),
    # back to running when the daemon comes back; cancel/fail allowed while down
    RunState.INTERRUPTED: frozenset({RunState.RUNNING, RunState.CANCELLED, RunState.FAILED}),
    RunState.SUCCEEDED: frozenset(),
    RunState.FAILED: frozenset(),
    RunState.CANCELLED: frozenset(),
}

PHASE_TRANSITIONS: dict[PhaseState, frozenset[PhaseState]] = {
    PhaseState.QUEUED: frozenset(
        {PhaseState.RUNNING, PhaseState.SKIPPED, PhaseState.CANCELLED, PhaseState.FAILED}
    ),
    # running -> running: the daemon died mid-phase and a new attempt starts
    PhaseState.RUNNING: frozenset(
        {PhaseState.RUNNING, PhaseState.SUCCEEDED, PhaseState.FAILED, PhaseState.SKIPPED,
         PhaseState.CANCELLED}
    ),
    PhaseState.SUCCEEDED: frozenset(),
    PhaseState.FAILED: frozenset(),
    PhaseState.SKIPPED: frozenset(),
    PhaseState.CANCELLED: frozenset(),
}

TERMINAL_RUN_STATES = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})
TERMINAL_PHASE_STATES = frozenset(
    {PhaseState.SUCCEEDED, PhaseState.FAILED, PhaseState.SKIPPED, PhaseState.CANCELLED}
)


def check_run_transition(current: str, target: str) -> RunState:
    """Return ``RunState(target)`` if ``current -> target`` is allowed, else raise."""
    cur, tgt = RunState(current), RunState(target)
    if tgt not in RUN_TRANSITIONS[cur]:
        raise InvalidTransition("run", cur, tgt)
    return tgt


def check_phase_transition(current: str, target: str) -> PhaseState:
    """Return ``PhaseState(target)`` if ``current -> target`` is allowed, else raise."""
    cur, tgt = PhaseState(current), PhaseState(target)
    if tgt not in PHASE_TRANSITIONS[cur]:
        raise InvalidTransition("phase", cur, tgt)
    return tgt

"""What to do after a failed check: pure decision table, no I/O.

The cheapest action that can help wins, in the order of DESIGN.md's
*Failure handling*: a deterministic pattern's safe action (zero tokens), a
hint for the Builder (zero extra tokens), the Doctor (one LLM call), and
limits that end the phase instead of looping.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# failures that a plain retry can fix (the world changes, the code does not need to)
TRANSIENT = frozenset({"network_timeout", "rate_limited", "network_unreachable"})
ACTING_KINDS = frozenset({"install_dependency", "wait"})


class Next(StrEnum):
    MITIGATE = "mitigate"  # act (install, wait), then run the checks again in this attempt
    RETRY = "retry"  # a new attempt (Builder gets the hint)
    DOCTOR = "doctor"  # ask the Doctor
    FAIL = "fail"  # the phase fails with the reason


@dataclass(frozen=True, kw_only=True)
class FailureFacts:
    kind: str  # "build" | "command"
    pattern: str | None  # None: unclassified, or hardening off
    mitigation_kind: str | None  # install_dependency | wait | hint | none
    auto_allowed: bool  # pattern in the auto_mitigate setting
    already_done: bool  # this exact action was taken in this phase already
    attempt: int
    max_attempts: int
    same_as_previous: bool  # same failure signature as the previous attempt
    llm_available: bool
    doctor_left_phase: int
    doctor_left_run: int


def decide(f: FailureFacts) -> tuple[Next, str]:
    """Return the next step and a short reason (shown in events and status)."""
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

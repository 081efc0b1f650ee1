"""Pure core of the detail page: a run's events → phases → attempts with what happened.

No I/O: the input is what :func:`._queries.run_detail` returns, plus ``now``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PHASE_END = {"phase_succeeded", "phase_failed", "phase_skipped", "phase_cancelled"}


@dataclass
class Failure:
    """One classified failure of an attempt, with what was done about it."""

    command: str | None
    exit_code: int | None
    pattern: str | None
    evidence: list[str]
    decision: str | None
    reason: str | None
    hint: str | None
    mitigations: list[dict[str, Any]] = field(default_factory=list)
    doctor: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Attempt:
    phase_id: str
    n: int
    start: float
    end: float | None = None
    outcome: str = "running"  # running | succeeded | failed | cancelled | skipped
    builder: dict[str, Any] | None = None
    diff: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    context_bytes: dict[str, int] = field(default_factory=dict)
    avoided: list[dict[str, Any]] = field(default_factory=list)  # Doctor calls not needed

    @property
    def empty(self) -> bool:
        return not (self.builder or self.checks or self.failures)


@dataclass
class Timeline:
    start: float
    end: float
    attempts: list[Attempt]
    by_phase: dict[str, list[Attempt]]
    run_events: list[dict[str, Any]]

    def position(self, a: Attempt, now: float) -> tuple[float, float]:
        """Left edge and width of an attempt's bar, in percent of the run's span."""
        span = max(self.end - self.start, 1e-6)
        left = (a.start - self.start) / span * 100
        width = ((a.end if a.end is not None else now) - a.start) / span * 100
        return round(max(0.0, min(left, 99.5)), 2), round(max(0.5, min(width, 100 - left)), 2)


def build_timeline(run: Mapping[str, Any], now: float) -> Timeline:
    """Attempts in order, each with its Builder summary, diff, checks, failures (classifier
    pattern and evidence, mitigation, Doctor decision) and LLM calls."""
    events: Sequence[dict[str, Any]] = run["events"]
    current: dict[str, Attempt] = {}
    attempts: list[Attempt] = []
    run_events: list[dict[str, Any]] = []
    for ev in events:
        kind, pid, pl = ev["kind"], ev["phase_id"], ev["payload"]
        if kind == "attempt_started" and pid:
            prev = current.get(pid)
            if prev is not None and prev.end is None:
                prev.end, prev.outcome = ev["ts"], "failed"
            current[pid] = Attempt(phase_id=pid, n=int(ev["attempt"] or 0), start=ev["ts"])
            attempts.append(current[pid])
            continue
        a = current.get(pid or "")
        if a is None:
            if pid is None:
                run_events.append(ev)
            continue
        _apply(a, kind, pl, ev["ts"])
    for a in attempts:
        if a.end is None and run.get("ended_at"):
            a.end, a.outcome = run["ended_at"], run["state"] if run["state"] != "succeeded" else "failed"
    for call in run.get("llm_calls", []):
        for a in attempts:
            if a.phase_id == call["phase_id"] and a.n == call["attempt"]:
                a.calls.append(call)
                break
    kept = [a for a in attempts if not (a.empty and a.end is not None)]
    start = events[0]["ts"] if events else float(run["created_at"])
    end = float(run["ended_at"] or now)
    by_phase: dict[str, list[Attempt]] = {}
    for a in kept:
        by_phase.setdefault(a.phase_id, []).append(a)
    return Timeline(start=start, end=max(end, start), attempts=kept, by_phase=by_phase,
                    run_events=run_events)


def _apply(a: Attempt, kind: str, pl: dict[str, Any], ts: float) -> None:
    if kind == "builder_started":
        a.builder = {"retry": pl.get("retry", False)}
        a.context_bytes["builder"] = int(pl.get("context_bytes", 0) or 0)
    elif kind == "builder_finished":
        a.builder = {**(a.builder or {}), **pl}
    elif kind == "builder_diff":
        a.diff = pl
    elif kind == "drift":
        a.drift = pl
    elif kind == "check_finished":
        a.checks.append(pl)
    elif kind == "classified":
        m = pl.get("mitigation") or {}
        a.failures.append(Failure(
            command=pl.get("command"), exit_code=pl.get("exit_code"), pattern=pl.get("pattern"),
            evidence=list(pl.get("evidence") or []), decision=pl.get("decision"),
            reason=pl.get("reason"), hint=m.get("hint") if isinstance(m, dict) else None))
    elif kind in ("mitigation", "doctor_called", "doctor_fix") and a.failures:
        target = a.failures[-1].mitigations if kind == "mitigation" else a.failures[-1].doctor
        target.append({"kind": kind, **pl})
        if kind == "doctor_called" and pl.get("context_bytes") is not None:
            a.context_bytes["doctor"] = int(pl["context_bytes"])
    elif kind == "doctor_avoided":
        a.avoided.append(pl)
    elif kind in PHASE_END:
        a.end = ts
        a.outcome = kind.removeprefix("phase_")


PUSD_PER_USD = 10**12  # costs are stored per call in picodollars (autopack.actors._budget)


def cost_usd(pusd: int | None) -> float | None:
    """USD of a stored cost in pUSD (``None`` stays unknown)."""
    return None if pusd is None else pusd / PUSD_PER_USD


def call_tokens(call: Mapping[str, Any]) -> dict[str, int]:
    return {"input": call["input_tokens"], "output": call["output_tokens"],
            "cache_creation": call["cache_creation"], "cache_read": call["cache_read"]}

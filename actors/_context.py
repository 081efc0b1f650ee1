"""Context budgeting: the pure core of the memory actor.

:func:`build_context` turns what memory knows about a run (its intention, the
current phase goal, approaches that already failed in this phase, lessons from
earlier runs on the same repository) into the short text injected into a
Builder or Doctor prompt.

Theory of operation
-------------------
Every item becomes exactly one self-describing line (``Goal: …``,
``Constraint: …``, ``Failed attempt 2: …``, ``Lesson: …``), with whitespace
collapsed, so a cut between lines never leaves a dangling heading. Lines come
in a fixed priority order:

1. goal, constraints, non-goals (and, for the Builder, acceptance criteria);
2. the current phase goal;
3. approaches that already failed in this phase (by attempt);
4. the most relevant lessons (in the order given: the caller ranks them);
5. for the Builder only, the outline of the run's other phases.

When everything fits in ``limit_bytes`` (UTF-8) the text is returned as is.
Otherwise each line is first capped to a share of the budget (so one huge
evidence excerpt cannot starve everything after it), then lines are taken in
order until the next one does not fit. That line is cut at a character
boundary with ``…`` when enough room is left, and the text ends with the
marker line :data:`TRUNCATED_MARKER`. Nothing of a lower priority ever
appears after something of a higher priority was dropped. When the limit
cannot even hold the marker, the result is empty.

The function is deterministic (same inputs, same bytes) because prompt
caching depends on it. No I/O, no clock, no randomness.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["builder", "doctor"]

TRUNCATED_MARKER = "[… truncated]"
ELLIPSIS = "…"
_ELLIPSIS_BYTES = len(ELLIPSIS.encode("utf-8"))
_MARKER_BYTES = len(TRUNCATED_MARKER.encode("utf-8"))
# Below this much room a partial line is more noise than signal: drop it instead.
_MIN_PARTIAL_BYTES = 24
# Under pressure a single line gets at most max(limit // share, _MIN_CAP) bytes.
_GOAL_SHARE = 2
_ITEM_SHARE = 4
_MIN_CAP = 96

_WS_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class Intention:
    """What the run is for, captured at submit."""

    goal: str
    constraints: tuple[str, ...] = ()
    non_goals: tuple[str, ...] = ()
    acceptance: tuple[str, ...] = ()
    phases: tuple[tuple[str, str], ...] = ()  # (phase id, phase goal) in plan order

    def phase_goal(self, phase_id: str | None) -> str | None:
        """The goal of ``phase_id``, or ``None`` when it is not part of the plan."""
        for pid, goal in self.phases:
            if pid == phase_id:
                return goal
        return None


@dataclass(frozen=True)
class FailedApproach:
    """One attempt of the current phase that did not work."""

    attempt: int
    tried: str
    pattern: str | None = None
    evidence: str = ""


@dataclass(frozen=True)
class Lesson:
    """A failure signature from an earlier run and the fix that resolved it."""

    signature: str
    fix: str
    pattern: str | None = None


@dataclass(frozen=True)
class _Line:
    text: str
    share: int = field(default=_ITEM_SHARE)


def clean(text: str) -> str:
    """One line of valid UTF-8: whitespace runs (newlines included) become one space.

    Lone surrogates (which cannot be encoded) become ``?``.
    """
    text = text.encode("utf-8", "replace").decode("utf-8")
    return _WS_RE.sub(" ", text).strip()


def utf8_len(text: str) -> int:
    """Size of ``text`` in UTF-8 bytes."""
    return len(text.encode("utf-8"))


def cut_utf8(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits in ``limit`` bytes.

    Never splits a character.
    """
    if limit <= 0:
        return ""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


def _cap(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` bytes, else a prefix ending with ``…`` that fits."""
    if utf8_len(text) <= limit:
        return text
    if limit < _ELLIPSIS_BYTES:
        return ""
    return cut_utf8(text, limit - _ELLIPSIS_BYTES).rstrip() + ELLIPSIS


def _unique(items: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        text = clean(item)
        if text and text not in seen:
            seen.add(text)
            out.append(text)
    return out


def _failure_text(pattern: str | None, evidence: str) -> str:
    pattern = clean(pattern or "")
    evidence = clean(evidence)
    if pattern and evidence:
        return f"{pattern}: {evidence}"
    return pattern or evidence or "unknown failure"


def context_lines(
    intention: Intention | None,
    phase_goal: str | None,
    failed_approaches: Sequence[FailedApproach],
    lessons: Sequence[Lesson],
    *,
    role: Role | str,
    phase_id: str | None = None,
) -> list[str]:
    """Every line of the full, uncut context, in priority order (see module docstring)."""
    return [line.text for line in _lines(intention, phase_goal, failed_approaches, lessons,
                                          role=role, phase_id=phase_id)]


def _lines(
    intention: Intention | None,
    phase_goal: str | None,
    failed_approaches: Sequence[FailedApproach],
    lessons: Sequence[Lesson],
    *,
    role: Role | str,
    phase_id: str | None,
) -> list[_Line]:
    builder = role != "doctor"
    lines: list[_Line] = []
    if intention is not None:
        goal = clean(intention.goal)
        if goal:
            lines.append(_Line(f"Goal: {goal}", _GOAL_SHARE))
        lines += [_Line(f"Constraint: {c}") for c in _unique(intention.constraints)]
        lines += [_Line(f"Non-goal: {n}") for n in _unique(intention.non_goals)]
        if builder:
            lines += [_Line(f"Acceptance: {a}") for a in _unique(intention.acceptance)]
    current = clean(phase_goal or "")
    if current:
        label = f"Current phase ({clean(phase_id)})" if phase_id and clean(phase_id) else "Current phase"
        lines.append(_Line(f"{label}: {current}"))
    seen: set[tuple[str, str]] = set()
    for fa in sorted(failed_approaches, key=lambda f: f.attempt):
        tried = clean(fa.tried) or "(no description)"
        failure = _failure_text(fa.pattern, fa.evidence)
        if (tried, failure) in seen:
            continue
        seen.add((tried, failure))
        lines.append(_Line(f"Failed attempt {fa.attempt}: {tried} -> {failure}"))
    seen_lessons: set[tuple[str, str]] = set()
    for lesson in lessons:
        signature = _failure_text(lesson.pattern, lesson.signature)
        fix = clean(lesson.fix)
        if not fix or (signature, fix) in seen_lessons:
            continue
        seen_lessons.add((signature, fix))
        lines.append(_Line(f"Lesson: {signature} -> fixed by: {fix}"))
    if builder and intention is not None:
        for pid, goal in intention.phases:
            if pid != phase_id and clean(goal):
                lines.append(_Line(f"Plan phase {clean(pid)}: {clean(goal)}"))
    return lines


def build_context(
    intention: Intention | None,
    phase_goal: str | None,
    failed_approaches: Sequence[FailedApproach],
    lessons: Sequence[Lesson],
    *,
    role: Role | str,
    limit_bytes: int,
    phase_id: str | None = None,
) -> str:
    """The bounded context text for a prompt.

    Returns at most ``limit_bytes`` bytes of UTF-8 (``""`` when there is nothing
    to say or the limit cannot hold the truncation marker). Lines are joined
    with ``\\n`` with no trailing newline. A cut text ends with the line
    :data:`TRUNCATED_MARKER`. ``role`` ``"doctor"`` leaves out acceptance
    criteria and the plan outline; any other value is treated as the Builder.
    """
    lines = _lines(intention, phase_goal, failed_approaches, lessons, role=role, phase_id=phase_id)
    full = "\n".join(line.text for line in lines)
    if utf8_len(full) <= limit_bytes:
        return full
    if limit_bytes < _MARKER_BYTES:
        return ""
    # Room for the kept lines plus "\n" + marker.
    room = limit_bytes - _MARKER_BYTES - 1
    kept: list[str] = []
    used = 0
    for line in lines:
        text = _cap(line.text, max(limit_bytes // line.share, _MIN_CAP))
        sep = 1 if kept else 0
        size = utf8_len(text)
        if used + sep + size <= room:
            kept.append(text)
            used += sep + size
            continue
        left = room - used - sep
        if left >= _MIN_PARTIAL_BYTES:
            kept.append(_cap(text, left))
        break
    kept.append(TRUNCATED_MARKER)
    return "\n".join(kept)

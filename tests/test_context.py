"""The context budgeting core: byte bounds, priority under pressure, determinism."""

from __future__ import annotations

import pytest
from autopack.actors._context import (
    TRUNCATED_MARKER,
    FailedApproach,
    Intention,
    Lesson,
    build_context,
    clean,
    context_lines,
    cut_utf8,
)
from hypothesis import given, settings
from hypothesis import strategies as st

INTENTION = Intention(
    goal="Add a /health endpoint to the API",
    constraints=("keep the public API unchanged",),
    non_goals=("no new dependencies",),
    acceptance=("GET /health returns 200",),
    phases=(("add-endpoint", "Add GET /health returning {\"ok\": true}"), ("docs", "Document it")),
)
FAILED = (
    FailedApproach(2, "imported yaml in config loader", "python_missing_dep",
                   "ModuleNotFoundError: No module named 'yaml'"),
    FailedApproach(1, "added route in app.py", "test_failure", "FAILED tests/test_health.py::test_ok"),
)
LESSONS = (Lesson("No module named 'yaml'", "add PyYAML to requirements", "python_missing_dep"),)


def _ctx(limit: int, role: str = "builder") -> str:
    return build_context(INTENTION, INTENTION.phase_goal("add-endpoint"), FAILED, LESSONS,
                         role=role, limit_bytes=limit, phase_id="add-endpoint")


def test_full_context_in_priority_order() -> None:
    assert _ctx(4096).splitlines() == [
        "Goal: Add a /health endpoint to the API",
        "Constraint: keep the public API unchanged",
        "Non-goal: no new dependencies",
        "Acceptance: GET /health returns 200",
        'Current phase (add-endpoint): Add GET /health returning {"ok": true}',
        "Failed attempt 1: added route in app.py -> test_failure: FAILED tests/test_health.py::test_ok",
        "Failed attempt 2: imported yaml in config loader -> python_missing_dep: "
        "ModuleNotFoundError: No module named 'yaml'",
        "Lesson: python_missing_dep: No module named 'yaml' -> fixed by: add PyYAML to requirements",
        "Plan phase docs: Document it",
    ]


def test_doctor_leaves_out_acceptance_and_plan() -> None:
    text = _ctx(4096, role="doctor")
    assert "Acceptance:" not in text
    assert "Plan phase" not in text
    assert text.startswith("Goal: ")


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        pytest.param(0, "", id="zero"),
        pytest.param(14, "", id="below-marker"),
        pytest.param(15, TRUNCATED_MARKER, id="marker-only"),
        pytest.param(60, "Goal: Add a /health endpoint to the API\n" + TRUNCATED_MARKER, id="goal-only"),
        pytest.param(90, "Goal: Add a /health endpoint to the API\n"
                         "Constraint: keep the public API…\n" + TRUNCATED_MARKER,
                     id="partial-constraint"),
    ],
)
def test_small_limits(limit: int, expected: str) -> None:
    text = _ctx(limit)
    assert text == expected
    assert len(text.encode()) <= limit


def test_nothing_known_is_empty() -> None:
    assert build_context(None, None, (), (), role="builder", limit_bytes=2048) == ""


def test_huge_evidence_does_not_starve_lessons() -> None:
    huge = (FailedApproach(1, "x", "test_failure", "E" * 100_000),)
    text = build_context(INTENTION, "phase goal", huge, LESSONS, role="builder", limit_bytes=2048)
    assert len(text.encode()) <= 2048
    assert "Lesson: python_missing_dep" in text
    assert text.endswith(TRUNCATED_MARKER)


def test_duplicates_collapse_and_whitespace_is_one_line() -> None:
    fa = (FailedApproach(1, "same\n\ttry", "p", "e"), FailedApproach(2, "same try", "p", "e"))
    lines = context_lines(Intention(goal="g\nh"), None, fa, (), role="builder")
    assert lines == ["Goal: g h", "Failed attempt 1: same try -> p: e"]


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        pytest.param("héllo", 2, "h", id="before-2-byte"),
        pytest.param("héllo", 3, "hé", id="after-2-byte"),
        pytest.param("日本", 5, "日", id="3-byte"),
        pytest.param("😀x", 3, "", id="4-byte"),
        pytest.param("abc", 0, "", id="zero"),
    ],
)
def test_cut_utf8(text: str, limit: int, expected: str) -> None:
    assert cut_utf8(text, limit) == expected


def test_clean_replaces_lone_surrogates() -> None:
    assert clean("a\ud800b") == "a?b"


# ------------------------------------------------------------------ properties
_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=300) | st.text(
    alphabet="aé日😀\n \t-:", max_size=3000)
_intentions = st.builds(
    Intention, goal=_text, constraints=st.lists(_text, max_size=5).map(tuple),
    non_goals=st.lists(_text, max_size=3).map(tuple), acceptance=st.lists(_text, max_size=3).map(tuple),
    phases=st.lists(st.tuples(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), _text),
                    max_size=4).map(tuple),
)
_failed = st.lists(st.builds(FailedApproach, attempt=st.integers(1, 9), tried=_text,
                             pattern=st.none() | st.sampled_from(["test_failure", "compile_error"]),
                             evidence=_text), max_size=6)
_lessons = st.lists(st.builds(Lesson, signature=_text, fix=_text,
                              pattern=st.none() | st.just("python_missing_dep")), max_size=6)
_limits = st.integers(0, 64) | st.integers(65, 4096)


def _is_prefix_line(kept: str, full: str) -> bool:
    if kept == full:
        return True
    return kept.endswith("…") and full.startswith(kept[: -1])


@settings(max_examples=300, deadline=None)
@given(intention=st.none() | _intentions, phase_goal=st.none() | _text, failed=_failed,
       lessons=_lessons, role=st.sampled_from(["builder", "doctor"]), limit=_limits)
def test_bound_utf8_priority_and_determinism(
    intention: Intention | None, phase_goal: str | None, failed: list[FailedApproach],
    lessons: list[Lesson], role: str, limit: int,
) -> None:
    text = build_context(intention, phase_goal, failed, lessons, role=role, limit_bytes=limit)
    raw = text.encode("utf-8")  # raises if not valid UTF-8
    assert len(raw) <= limit
    assert raw.decode("utf-8") == text
    # Deterministic: same inputs, same bytes.
    again = build_context(intention, phase_goal, list(failed), list(lessons), role=role,
                          limit_bytes=limit)
    assert again == text
    full = context_lines(intention, phase_goal, failed, lessons, role=role)
    if not text:
        return
    lines = text.split("\n")
    if lines[-1] == TRUNCATED_MARKER and "\n".join(full) != text:
        lines = lines[:-1]
    else:
        assert lines == full
        return
    # Under pressure: what is kept is the head of the priority list, in order; only
    # lines may be shortened (with …), never reordered or skipped.
    assert len(lines) <= len(full)
    for kept, original in zip(lines, full, strict=False):
        assert _is_prefix_line(kept, original), (kept, original)


@settings(max_examples=50, deadline=None)
@given(goal=st.text(min_size=1, max_size=50).filter(lambda s: clean(s) != ""),
       limit=st.integers(200, 4096))
def test_goal_survives_a_huge_rest(goal: str, limit: int) -> None:
    lessons = [Lesson(f"signature {i} " + "x" * 500, "fix " * 200) for i in range(50)]
    text = build_context(Intention(goal=goal), "p" * 10_000, [], lessons, role="builder",
                         limit_bytes=limit)
    first, goal_line = text.splitlines()[0], f"Goal: {clean(goal)}"
    if len(goal_line.encode()) <= limit // 2:  # a goal gets at least half of the budget
        assert first == goal_line
    else:
        assert _is_prefix_line(first, goal_line)
        assert first.endswith("…")
    assert len(text.encode()) <= limit

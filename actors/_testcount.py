"""How many tests a check ran, from its output; the zero-tests rule.

The runner-summary parser is the classifier's
(:func:`autopack.actors.classifier.parse_test_summary`: pytest, unittest,
cargo, go test, node/jest/vitest, Surefire …). Pure code: no I/O.
"""

from __future__ import annotations

from typing import Any

from .classifier import parse_test_summary

__all__ = ["test_counts", "zero_tests"]


def test_counts(output: str) -> dict[str, Any] | None:
    """``{"runner", "ran", "passed", "failed", "skipped"}`` from the runner's summary in
    ``output`` (several summaries are summed), or ``None`` when no runner summary is
    recognised. ``ran`` excludes skipped tests."""
    summary = parse_test_summary(output)
    if summary is None:
        return None
    return {k: getattr(summary, k) for k in ("runner", "ran", "passed", "failed", "skipped")}


test_counts.__dict__["__test__"] = False  # not a pytest test (its name starts with test_)


def zero_tests(counts: dict[str, Any] | None) -> bool:
    """The runner reported that it ran nothing (all skipped counts as nothing)."""
    return counts is not None and counts.get("ran") == 0

"""The classifier against real output captured from real tools (see fixtures/failures/capture.py)."""

from __future__ import annotations

from collections import defaultdict

import pytest
from autopack.actors.classifier import PATTERNS, classify

from .corpus import load, score

FIXTURES = load()


def test_corpus_covers_every_id_with_four_fixtures_from_two_tools() -> None:
    by_id: dict[str, list[str]] = defaultdict(list)
    for f in FIXTURES:
        if f.expected:
            by_id[f.expected].append(f.tool)
    for pid in PATTERNS:
        assert len(by_id[pid]) >= 4, pid
        assert len(set(by_id[pid])) >= 2, pid
    assert sum(1 for f in FIXTURES if f.expected is None) >= 10


def test_precision_is_perfect_and_recall_high() -> None:
    s = score(FIXTURES)
    print(s.table)  # captured: shown only on failure or with -s
    assert s.none_errors == []
    assert {p: v for p, v in s.precision.items() if v < 1.0} == {}, s.mistakes
    assert s.overall_recall >= 0.9, s.mistakes


@pytest.mark.parametrize("fx", [f for f in FIXTURES if f.expected is None], ids=lambda f: f.name)
def test_no_pattern_fixtures_give_none(fx: object) -> None:
    from .corpus import Fixture

    assert isinstance(fx, Fixture)
    c = classify(fx.output, fx.exit_code, fx.ctx)
    assert c.pattern is None, (c.evidence, c.details)
    assert c.mitigation is None


@pytest.mark.parametrize("fx", [f for f in FIXTURES if f.expected], ids=lambda f: f.name)
def test_every_classified_fixture_has_evidence_from_its_output_and_a_mitigation(fx: object) -> None:
    from .corpus import Fixture

    assert isinstance(fx, Fixture)
    c = classify(fx.output, fx.exit_code, fx.ctx)
    assert c.pattern == fx.expected
    assert c.evidence
    assert c.mitigation is not None
    text = fx.output.decode("utf-8", "replace")
    if not c.evidence[0].startswith("exit status"):
        assert c.evidence[0].rstrip("…")[:60] in text

"""Precision/recall over the fixture corpus in ``tests/fixtures/failures``."""

from __future__ import annotations

import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from autopack.actors.classifier import PATTERNS, classify
from autopack.protocol import ClassifyContext

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "failures"


@dataclass(frozen=True)
class Fixture:
    name: str
    tool: str
    command: str
    exit_code: int
    expected: str | None
    ctx: ClassifyContext

    @property
    def output(self) -> bytes:
        return (FIXTURES / f"{self.name}.log").read_bytes()


def load() -> list[Fixture]:
    manifest = tomllib.loads((FIXTURES / "manifest.toml").read_text())["fixture"]
    out = []
    for name, e in sorted(manifest.items()):
        ctx = ClassifyContext(
            command=e["command"],
            repo_modules=list(e.get("repo_modules", [])),
            lockfile_manager=e.get("lockfile_manager") or None,
        )
        expected = None if e["expected"] == "none" else e["expected"]
        out.append(Fixture(name, e["tool"], e["command"], e["exit_code"], expected, ctx))
    return out


@dataclass(frozen=True)
class Scores:
    precision: dict[str, float]  # per id; 1.0 when never predicted
    recall: dict[str, float]
    overall_recall: float
    none_errors: list[str]  # no-pattern fixtures that got a pattern
    mistakes: list[tuple[str, str | None, str | None]]  # name, expected, got
    table: str


def score(fixtures: list[Fixture]) -> Scores:
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    mistakes = []
    none_errors = []
    for f in fixtures:
        got = classify(f.output, f.exit_code, f.ctx).pattern
        if got == f.expected:
            if got is not None:
                tp[got] += 1
            continue
        mistakes.append((f.name, f.expected, got))
        if got is not None:
            fp[got] += 1
        if f.expected is not None:
            fn[f.expected] += 1
        else:
            none_errors.append(f.name)
    precision = {p: (tp[p] / (tp[p] + fp[p]) if tp[p] + fp[p] else 1.0) for p in PATTERNS}
    recall = {p: (tp[p] / (tp[p] + fn[p]) if tp[p] + fn[p] else 1.0) for p in PATTERNS}
    positives = sum(1 for f in fixtures if f.expected is not None)
    overall = sum(tp.values()) / positives if positives else 1.0
    rows = [f"{'pattern':22s} {'n':>3s} {'prec':>6s} {'recall':>6s}"]
    for p in PATTERNS:
        n = tp[p] + fn[p]
        rows.append(f"{p:22s} {n:3d} {precision[p]:6.2f} {recall[p]:6.2f}")
    rows.append(f"{'overall recall':22s} {positives:3d} {'':6s} {overall:6.2f}")
    return Scores(precision, recall, overall, none_errors, mistakes, "\n".join(rows))

"""Precision/recall over the fixture corpus in ``tests/fixtures/failures``."""

from __future__ import annotations

import gzip
import tomllib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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


# --- the larger corpus (tests/fixtures/corpus): dev and held-out splits ---------

CORPUS = FIXTURES.parent / "corpus"


@dataclass(frozen=True)
class Log:
    name: str
    tool: str
    version: str
    exit_code: int
    expected: str | None
    ctx: ClassifyContext
    split: str  # "dev" or "heldout"
    scenario: str
    variant: str

    @property
    def output(self) -> bytes:
        return gzip.decompress((CORPUS / f"{self.name}.log.gz").read_bytes())


def load_corpus(split: str | None = None) -> list[Log]:
    """The corpus's logs, all or one split's, in name order."""
    entries = tomllib.loads((CORPUS / "manifest.toml").read_text())["log"]
    out = []
    for name, e in sorted(entries.items()):
        if split is not None and e["split"] != split:
            continue
        ctx = ClassifyContext(
            command=e["command"],
            repo_modules=list(e.get("repo_modules", [])),
            lockfile_manager=e.get("lockfile_manager") or None,
        )
        expected = None if e["expected"] == "none" else e["expected"]
        out.append(Log(name, e["tool"], e["version"], e["exit_code"], expected, ctx, e["split"], e["scenario"], e["variant"]))
    return out


@dataclass(frozen=True)
class Report:
    n: dict[str, int]  # logs whose expected id is this one
    precision: dict[str, float | None]  # None when the id was never predicted
    recall: dict[str, float | None]  # None when no log expects the id
    overall_precision: float
    overall_recall: float
    logs: int
    null_logs: int
    mistakes: list[tuple[str, str | None, str | None]]

    def table(self, title: str) -> str:
        def f(v: float | None) -> str:
            return "     -" if v is None else f"{v:6.3f}"

        rows = [title, f"{'pattern':22s} {'n':>4s} {'prec':>6s} {'recall':>6s}"]
        for p in PATTERNS:
            rows.append(f"{p:22s} {self.n.get(p, 0):4d} {f(self.precision[p])} {f(self.recall[p])}")
        rows.append(f"{'(none)':22s} {self.null_logs:4d}")
        rows.append(f"{'overall':22s} {self.logs:4d} {self.overall_precision:6.3f} {self.overall_recall:6.3f}")
        return "\n".join(rows)


class Labelled(Protocol):
    """A captured log with its expected id: a :class:`Log` or an original :class:`Fixture`."""

    @property
    def name(self) -> str: ...
    @property
    def exit_code(self) -> int: ...
    @property
    def expected(self) -> str | None: ...
    @property
    def ctx(self) -> ClassifyContext: ...
    @property
    def output(self) -> bytes: ...


def evaluate(logs: Sequence[Labelled]) -> Report:
    """Classify every log; precision and recall per id and overall (micro-averaged)."""
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    n: Counter[str] = Counter()
    mistakes = []
    for log in logs:
        got = classify(log.output, log.exit_code, log.ctx).pattern
        if log.expected is not None:
            n[log.expected] += 1
        if got == log.expected:
            if got is not None:
                tp[got] += 1
            continue
        mistakes.append((log.name, log.expected, got))
        if got is not None:
            fp[got] += 1
        if log.expected is not None:
            fn[log.expected] += 1
    precision = {p: (tp[p] / (tp[p] + fp[p]) if tp[p] + fp[p] else None) for p in PATTERNS}
    recall = {p: (tp[p] / n[p] if n[p] else None) for p in PATTERNS}
    predicted = sum(tp.values()) + sum(fp.values())
    positives = sum(n.values())
    return Report(
        n=dict(n), precision=precision, recall=recall,
        overall_precision=sum(tp.values()) / predicted if predicted else 1.0,
        overall_recall=sum(tp.values()) / positives if positives else 1.0,
        logs=len(logs), null_logs=sum(1 for x in logs if x.expected is None), mistakes=mistakes,
    )

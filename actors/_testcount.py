"""How many tests a check ran, from its output; the zero-tests rule.

The runner-summary parser belongs to the classifier
(``autopack.actors.classifier.parse_test_summary``). Until it is present this
module falls back to a minimal private reading of pytest's and unittest's
final summary lines (to be deleted once the classifier's parser lands).

Pure code: no I/O.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

__all__ = ["test_counts", "zero_tests"]

_PYTEST_LINE = re.compile(
    r"^=*\s*((?:\d+ (?:passed|failed|skipped|deselected|xfailed|xpassed|errors?|warnings?)"
    r"(?:, )?)+|no tests ran)(?: in [\d.]+s.*)?\s*=*\s*$", re.MULTILINE)
_PYTEST_PART = re.compile(r"(\d+) (passed|failed|skipped|deselected|xfailed|xpassed|errors?)")
_UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in [\d.]+s", re.MULTILINE)
_UNITTEST_END = re.compile(r"^(OK|FAILED)(?: \(([^)]*)\))?\s*$", re.MULTILINE)


def _fallback(output: str) -> dict[str, Any] | None:
    """pytest's ``N passed, M failed in Xs`` / unittest's ``Ran N tests`` (last one wins)."""
    ran_m = list(_UNITTEST_RAN.finditer(output))
    py_m = [m for m in _PYTEST_LINE.finditer(output) if " in " in m.group(0)
            or "no tests ran" in m.group(0)]
    if py_m and (not ran_m or py_m[-1].start() > ran_m[-1].start()):
        counts: dict[str, int] = {}
        for n, word in _PYTEST_PART.findall(py_m[-1].group(1)):
            counts[word.rstrip("s") if word.startswith("error") else word] = int(n)
        passed, failed = counts.get("passed", 0), counts.get("failed", 0)
        ran = passed + failed + counts.get("xfailed", 0) + counts.get("xpassed", 0)
        return {"runner": "pytest", "ran": ran, "passed": passed, "failed": failed,
                "skipped": counts.get("skipped", 0)}
    if ran_m:
        ran = int(ran_m[-1].group(1))
        end = _UNITTEST_END.search(output, ran_m[-1].end())
        extra = dict(re.findall(r"(\w+)=(\d+)", end.group(2) or "")) if end else {}
        failed = int(extra.get("failures", 0)) + int(extra.get("errors", 0))
        skipped = int(extra.get("skipped", 0))
        return {"runner": "unittest", "ran": ran - skipped, "passed": ran - skipped - failed,
                "failed": failed, "skipped": skipped}
    return None


def _parser() -> Callable[[str], Any] | None:
    try:
        mod = importlib.import_module("autopack.actors.classifier")
    except ImportError:  # pragma: no cover - the classifier is part of the package
        return None
    fn = getattr(mod, "parse_test_summary", None)
    return fn if callable(fn) else None


def test_counts(output: str) -> dict[str, Any] | None:
    """``{"runner", "ran", "passed", "failed", "skipped"}`` from the runner's summary in
    ``output`` (several summaries are summed), or ``None`` when no runner summary is
    recognised. ``ran`` excludes skipped tests."""
    parse = _parser()
    if parse is None:
        return _fallback(output)
    summary = parse(output)
    if summary is None:
        return None
    return {k: getattr(summary, k) for k in ("runner", "ran", "passed", "failed", "skipped")}


def zero_tests(counts: dict[str, Any] | None) -> bool:
    """The runner reported that it ran nothing (all skipped counts as nothing)."""
    return counts is not None and counts.get("ran") == 0

"""The failure classifier: deterministic patterns, safe mitigations, Doctor only when nothing is known.

Public surface:

- :func:`classify` — pure: output + exit status + context → :class:`~autopack.protocol.Classification`.
- :data:`PATTERNS` — taxonomy id → one-line description.
- :func:`distribution_for`, :func:`is_stdlib` — Python import name → distribution to install.
- :func:`mitigation_for` — pure: pattern + details → :class:`~autopack.protocol.Mitigation`.
- :func:`parse_test_summary`, :class:`TestSummary` — pure: a test runner's closing counts
  (pytest, unittest, cargo, go, node --test, jest, vitest, mocha, Surefire) or ``None``.
- :func:`timeout_record` — the line a supervisor appends when it stopped a check for its time limit.
- :func:`apply_mitigation`, :func:`action_key`, :func:`undeclared_dependency`,
  :func:`declared_dependencies`, :class:`ActionResult` — acting on a mitigation (anyio).
- :class:`ClassifierActor`, :class:`ClassifierClient`, :class:`ClassifyRequest`,
  :class:`ClassifierStatistics` — the supervised, restartable actor and its callers' handle (anyio).

The async parts are imported lazily so that ``autopackctl classify`` loads
only the pure core.
"""

from typing import TYPE_CHECKING, Any

from ._core import classify as classify
from ._core import timeout_record as timeout_record
from ._distmap import distribution_for as distribution_for
from ._distmap import is_stdlib as is_stdlib
from ._mitigations import mitigation_for as mitigation_for
from ._patterns import PATTERNS as PATTERNS
from ._summary import TestSummary as TestSummary
from ._summary import parse_test_summary as parse_test_summary

if TYPE_CHECKING:
    from ._actions import ActionResult as ActionResult
    from ._actions import action_key as action_key
    from ._actions import apply_mitigation as apply_mitigation
    from ._actions import declared_dependencies as declared_dependencies
    from ._actions import undeclared_dependency as undeclared_dependency
    from ._actor import ClassifierActor as ClassifierActor
    from ._actor import ClassifierClient as ClassifierClient
    from ._actor import ClassifierStatistics as ClassifierStatistics
    from ._actor import ClassifyRequest as ClassifyRequest

_LAZY = {
    "ActionResult": "_actions", "action_key": "_actions", "apply_mitigation": "_actions",
    "declared_dependencies": "_actions", "undeclared_dependency": "_actions",
    "ClassifierActor": "_actor", "ClassifierStatistics": "_actor", "ClassifyRequest": "_actor",
    "ClassifierClient": "_actor",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "PATTERNS",
    "TestSummary",
    "ActionResult",
    "ClassifierActor",
    "ClassifierClient",
    "ClassifierStatistics",
    "ClassifyRequest",
    "action_key",
    "apply_mitigation",
    "classify",
    "declared_dependencies",
    "distribution_for",
    "is_stdlib",
    "mitigation_for",
    "parse_test_summary",
    "timeout_record",
    "undeclared_dependency",
]

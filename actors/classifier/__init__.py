"""The failure classifier: deterministic patterns, safe mitigations, Doctor only when nothing is known.

Public surface:

- :func:`classify` — pure: output + exit status + context → :class:`~autopack.protocol.Classification`.
- :data:`PATTERNS` — taxonomy id → one-line description.
- :func:`distribution_for` — Python import name → distribution to install.
- :func:`mitigation_for` — pure: pattern + details → :class:`~autopack.protocol.Mitigation`.
- :func:`apply_mitigation`, :func:`undeclared_dependency`, :class:`ActionResult` — acting on a mitigation.
- :class:`ClassifierActor`, :class:`ClassifyRequest`, :class:`ClassifierStatistics` — the supervised actor.
"""

from ._core import classify as classify
from ._core import timeout_record as timeout_record
from ._distmap import distribution_for as distribution_for
from ._distmap import is_stdlib as is_stdlib
from ._mitigations import mitigation_for as mitigation_for
from ._patterns import PATTERNS as PATTERNS

__all__ = [
    "PATTERNS",
    "classify",
    "distribution_for",
    "is_stdlib",
    "mitigation_for",
    "timeout_record",
]

"""Every pattern's mitigation text, rendered from real captured logs, reads as a sentence.

The summary and hint go to the Builder's prompt: a template placeholder the rule
did not fill (``import error: ?``) must never reach it.
"""

from __future__ import annotations

import re

import pytest
from autopack.actors.classifier import PATTERNS, classify

from .corpus import Fixture, load

FIXTURES = [f for f in load() if f.expected]
_PLACEHOLDER = re.compile(r"(?:^|[\s(:])\?(?=$|[\s).,;])|\{[a-z_]+\}|\bNone\b")


def _rendered(fx: Fixture) -> list[str]:
    c = classify(fx.output, fx.exit_code, fx.ctx)
    assert c.pattern == fx.expected
    assert c.mitigation is not None
    texts = [c.mitigation.summary, c.mitigation.hint or ""]
    # a failing test's report is quoted verbatim after "Report:"; only our own words are checked
    return [t.split("Report:\n", 1)[0] for t in texts]


@pytest.mark.parametrize("fx", FIXTURES, ids=lambda f: f.name)
def test_no_placeholder_reaches_a_prompt(fx: Fixture) -> None:
    for text in _rendered(fx):
        assert not _PLACEHOLDER.search(text), text


def test_every_pattern_has_its_hint_rendered_from_a_real_log() -> None:
    assert {f.expected for f in FIXTURES} == set(PATTERNS)


def test_cannot_import_name_names_the_name_and_the_module() -> None:
    fx = next(f for f in FIXTURES if b"cannot import name" in f.output and f.expected == "python_import_error")
    c = classify(fx.output, fx.exit_code, fx.ctx)
    assert c.mitigation is not None
    assert c.mitigation.hint
    m = re.search(rb"cannot import name '(\w+)' from '([\w.]+)'", fx.output)
    assert m is not None
    name, module = m.group(1).decode(), m.group(2).decode()
    assert f"cannot import name '{name}' from '{module}'" in c.mitigation.summary
    assert f"'{name}'" in c.mitigation.hint
    assert f"'{module}'" in c.mitigation.hint

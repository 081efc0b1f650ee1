"""The fast engine against a plain reference: every cleaned line, every rule, in order."""

from __future__ import annotations

import pytest
from autopack.actors.classifier import classify
from autopack.actors.classifier._core import _CHUNK, SCANS, Hit, normalize_details, scan
from autopack.actors.classifier._patterns import NOT_ROOT, QUOTED, ROOT, RULES, STEMS, quoted_source
from autopack.actors.classifier._text import Scan, clean_line
from autopack.protocol import ClassifyContext

from .corpus import load


def reference(text: str, exit_code: int | None, ctx: ClassifyContext) -> tuple[str | None, str | None]:
    """No stems, no gates, no chunks: (the first root-cause line's id, the first consequence's before it)."""
    sc = Scan(text, exit_code, ctx)
    first_summary: str | None = None
    s = 0
    while s < len(text):
        e = text.find("\n", s)
        e = len(text) if e < 0 else e
        line = clean_line(text[s : min(e, s + 4000)])
        if line and not QUOTED.match(line):
            no_root = NOT_ROOT.match(line) is not None
            for rule in RULES:
                if no_root and rule.tier == ROOT:
                    continue
                m = rule.rx.search(line)
                if m is None or rule.post is None:
                    continue
                verdict = rule.post(m, line, sc, s, e)
                if verdict is None:
                    continue
                hit = Hit(verdict[0], rule.tier, s, e, line, normalize_details(verdict[1]))
                root = hit.tier == ROOT and not sc.in_captured_output(s) and not quoted_source(sc, s, e, line)
                if root and not hit.details.get("retried"):
                    return hit.pattern, first_summary
                if (hit.tier != ROOT or root) and first_summary is None:  # a retried root waits like a consequence
                    first_summary = hit.pattern
                break
        s = e + 1
    return None, first_summary


FIXTURES = [f for f in load() if f.output]


@pytest.mark.parametrize("fx", FIXTURES, ids=lambda f: f.name)
def test_scan_finds_what_trying_every_rule_on_every_line_finds(fx: object) -> None:
    from .corpus import Fixture

    assert isinstance(fx, Fixture)
    text = fx.output.decode("utf-8", "replace")
    root, summaries = scan(Scan(text, fx.exit_code, fx.ctx))
    got = (root.pattern if root else None, summaries[0].pattern if summaries else None)
    assert got == reference(text, fx.exit_code, fx.ctx)


def test_every_stem_belongs_to_exactly_one_scan() -> None:
    for stem in STEMS:
        assert sum(1 for rx in SCANS if rx.fullmatch(stem)) == 1, stem
    assert len(SCANS) <= 12  # each scan is a pass over the whole output


def test_earliest_root_cause_wins_across_chunks() -> None:
    noise = "tests/test_api.py::test_error_response PASSED  [ 42%]\n"
    first = "E   ModuleNotFoundError: No module named 'yaml'\n"
    later = "OSError: [Errno 28] No space left on device\n"
    filler = noise * (_CHUNK // len(noise))
    assert classify(filler + first + filler + later, 1).pattern == "python_missing_dep"
    assert classify(filler + filler + later + first, 1).pattern == "disk_full"
    # the decisive line right where a chunk ends, with no newline at the very end
    cut = "x" * (_CHUNK - 1) + "\n"
    assert classify(cut + later.rstrip("\n"), 1).pattern == "disk_full"


@pytest.mark.parametrize(("line", "expected"), [
    pytest.param("Rate limit exceeded. Please retry after 20 seconds.", "rate_limited", id="case-insensitive-rule"),
    pytest.param("ERROR: test_parse (tests.test_cli.CliTest)\n----\nRan 1 test in 0.01s\n", "test_failure",
                 id="unittest-error-line"),
    pytest.param("\x1b[31merror\x1b[0m: could not find `Cargo.toml` in `/w` or any parent directory",
                 "wrong_working_dir", id="ansi"),
    pytest.param("gcc -O2 -Werror=implicit -c src/a.c -o a.o\n# fail 0\n1 passed, 0 failed in 0.1s\n", None,
                 id="noise-words"),
])
def test_lines(line: str, expected: str | None) -> None:
    assert classify(line + "\n", 1).pattern == expected


def test_file_inside_the_repository_is_named_relative_to_it():
    from autopack.actors.classifier import classify
    from autopack.protocol import ClassifyContext

    out = ('  File "/srv/wt/run-1/calc/ops.py", line 11\n    def f()\n           ^\n'
           "SyntaxError: expected ':'\n")
    c = classify(out, 1, ClassifyContext(repo_root="/srv/wt/run-1"))
    assert c.pattern == "python_syntax_error"
    assert c.details["file"] == "calc/ops.py"
    assert "calc/ops.py:11" in c.mitigation.hint
    outside = classify(out, 1, ClassifyContext(repo_root="/elsewhere"))
    assert outside.details["file"] == "/srv/wt/run-1/calc/ops.py"

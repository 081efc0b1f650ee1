"""Test runners' own closing summaries: how many tests ran, passed, failed, were skipped.

Pure: text in, :class:`TestSummary` out, no I/O.

Theory of operation
-------------------
ANSI escapes and carriage-return progress are removed first (:func:`plain_text`).
Each runner's closing lines hold a literal that is searched for directly
(``test result: ``, ``Ran N tests in``, ``Tests run: ``, ...): a few literal
searches over the text, never one regex per line. A candidate line is then
matched whole, so a test that merely *prints* "Ran 3 tests" mid-line, or a
word like "passed" in a log message, is not a summary.

Counting rules, the same for every runner:

- ``failed`` counts failures *and* errors (pytest ``error``, unittest
  ``errors=``, Surefire ``Errors:``, node ``cancelled``);
- ``passed`` counts tests whose outcome was as expected, including pytest's
  ``xfailed``/``xpassed`` and unittest's ``expected failures``;
- ``skipped`` counts skipped / ignored / pending / todo tests;
- ``ran`` = ``passed + failed``: tests executed, skipped ones excluded.

unittest's "Ran N tests" counts skipped tests on Python 3.11 and 3.13 but
not on 3.12, and the output does not say which: the parser subtracts the
skipped ones, so on 3.12 ``ran`` and ``passed`` are low by the skip count.

A count the runner does not print is ``None``: ``go test`` without ``-v``
prints failing tests and one ``ok`` line per package, so its ``passed`` and
``skipped`` are unknown and its ``ran`` is a lower bound (the failing tests,
plus one for each package reported ``ok`` with tests). Several summaries in
one output (two runs, cargo's unit/integration/doc-test binaries, Maven
modules) are summed; the runner is the first one's name, or ``"mixed"``
when they differ. Maven Surefire prints no count at all when a module has
no tests: such output has no summary.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec


class TestSummary(msgspec.Struct, frozen=True):
    """The counts a test runner reported (see the module docstring for the rules)."""

    __test__ = False  # not a pytest test class

    runner: str
    ran: int
    passed: int | None
    failed: int | None
    skipped: int | None


_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b\n]*(?:\x07|\x1b\\)?|[()][0-9A-Za-z]|[=>NOM78c])")
_CR_PROGRESS = re.compile(r"[^\r\n]*\r(?!\n)")


def plain_text(text: str) -> str:
    """``text`` without ANSI escapes and with each carriage-return-overwritten line as last shown.

    A line redrawn with ``\\r`` (progress bars, spinners) keeps only its last
    segment; ``\\r\\n`` line ends become ``\\n``. Cheap when there is nothing
    to remove (two substring checks).
    """
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    if "\r" in text:
        text = _CR_PROGRESS.sub("", text.replace("\r\n", "\n"))
    return text


@dataclass(slots=True)
class Found:
    pos: int
    runner: str
    ran: int
    passed: int | None
    failed: int | None
    skipped: int | None


def _line_at(text: str, pos: int) -> tuple[int, int, str]:
    s = text.rfind("\n", 0, pos) + 1
    e = text.find("\n", pos)
    if e < 0:
        e = len(text)
    return s, e, text[s:e].rstrip()


def _next_lines(text: str, end: int, n: int) -> list[str]:
    out: list[str] = []
    pos = end + 1
    while len(out) < n and pos < len(text):
        e = text.find("\n", pos)
        if e < 0:
            e = len(text)
        out.append(text[pos:e].strip())
        pos = e + 1
    return out


def _counts(parts: str, sep: str) -> dict[str, int]:
    """``"2 failed, 3 passed"`` → ``{"failed": 2, "passed": 3}`` (words singularised)."""
    out: dict[str, int] = {}
    for part in parts.split(sep):
        bits = part.strip().split(" ", 1)
        if len(bits) == 2 and bits[0].isdigit():
            word = bits[1].strip().removesuffix("s") if bits[1].strip() in ("errors", "warnings") else bits[1].strip()
            out[word] = out.get(word, 0) + int(bits[0])
    return out


def _found(pos: int, runner: str, passed: int, failed: int, skipped: int) -> Found:
    return Found(pos, runner, passed + failed, passed, failed, skipped)


# --- pytest ------------------------------------------------------------------

_PYTEST_HINT = re.compile(r" in \d+(?:\.\d+)?s\b")
_PYTEST_WORDS = "failed|passed|skipped|deselected|xfailed|xpassed|errors?|warnings?|rerun"
_PYTEST = re.compile(
    rf"^=*\s*(?P<body>(?:\d+ (?:{_PYTEST_WORDS})(?:, |(?= in ))?)+|no tests ran)"
    r" in \d+(?:\.\d+)?s(?: \(\d+:\d\d:\d\d\))?\s*=*$"
)


def _pytest(text: str) -> Iterator[Found]:
    last = -1
    for m in _PYTEST_HINT.finditer(text):
        s, _, line = _line_at(text, m.start())
        if s == last:
            continue
        last = s
        lm = _PYTEST.match(line)
        if lm is None:
            continue
        c = _counts(lm.group("body"), ",")
        passed = c.get("passed", 0) + c.get("xfailed", 0) + c.get("xpassed", 0)
        yield _found(s, "pytest", passed, c.get("failed", 0) + c.get("error", 0), c.get("skipped", 0))


# --- unittest ----------------------------------------------------------------

_UNITTEST = re.compile(r"Ran (\d+) tests? in \d+(?:\.\d+)?s$", re.M)
_UNITTEST_END = re.compile(r"^(OK|FAILED|NO TESTS RAN)(?: \((.*)\))?$")


def _eq_counts(parts: str) -> dict[str, int]:
    """``"failures=1, errors=1, skipped=2"`` → ``{"failures": 1, ...}``."""
    out: dict[str, int] = {}
    for part in parts.split(","):
        k, _, v = part.strip().partition("=")
        if v.isdigit():
            out[k] = int(v)
    return out


def _unittest(text: str) -> Iterator[Found]:
    for m in _UNITTEST.finditer(text):
        if not _starts_line(text, m.start()):
            continue
        total = int(m.group(1))
        status = next((_UNITTEST_END.match(x) for x in _next_lines(text, m.end(), 3) if x), None)
        if status is None:
            yield Found(m.start(), "unittest", total, None, None, None)
            continue
        c = _eq_counts(status.group(2) or "")
        skipped = c.get("skipped", 0)
        failed = c.get("failures", 0) + c.get("errors", 0) + c.get("unexpected successes", 0)
        yield _found(m.start(), "unittest", max(0, total - skipped - failed), failed, skipped)


# --- cargo test --------------------------------------------------------------

_CARGO = re.compile(
    r"test result: (?:ok|FAILED)\. (\d+) passed; (\d+) failed; (\d+) ignored; \d+ measured; \d+ filtered out"
)


def _cargo(text: str) -> Iterator[Found]:
    for m in _CARGO.finditer(text):
        if _starts_line(text, m.start()):
            yield _found(m.start(), "cargo", int(m.group(1)), int(m.group(2)), int(m.group(3)))


# --- go test -----------------------------------------------------------------

_GO_TEST = re.compile(r"--- (PASS|FAIL|SKIP): \S")
_GO_PKGS = tuple(re.compile(re.escape(w) + r"\t\S+(?:\t([^\n]*))?") for w in ("ok  ", "FAIL", "?   "))


def _go(text: str) -> Iterator[Found]:
    if "\t" not in text and "--- " not in text:
        return
    tests = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    first = -1
    for m in _GO_TEST.finditer(text):
        if _starts_line(text, m.start()):  # top-level tests only (subtests are indented)
            tests[m.group(1)] += 1
            first = m.start() if first < 0 else first
    ok_with_tests = 0
    packages = 0
    for kind, rx in zip(("ok", "FAIL", "?"), _GO_PKGS, strict=True):
        for m in rx.finditer(text):
            if not _starts_line(text, m.start()):
                continue
            packages += 1
            first = m.start() if first < 0 else min(first, m.start())
            if kind == "ok" and "[no tests to run]" not in (m.group(1) or ""):
                ok_with_tests += 1
    verbose = "=== RUN" in text
    if first < 0 or (packages == 0 and not verbose):
        return
    if verbose:
        yield _found(first, "go", tests["PASS"], tests["FAIL"], tests["SKIP"])
    elif ok_with_tests == 0 and tests["FAIL"] == 0 and "FAIL\t" not in text:
        yield _found(first, "go", 0, 0, 0)  # every package said "no test files" / "no tests to run"
    else:
        yield Found(first, "go", tests["FAIL"] + ok_with_tests, None, tests["FAIL"], None)


# --- node --test -------------------------------------------------------------

_NODES = (re.compile(r"# tests \d+$", re.M), re.compile(r"ℹ tests \d+$", re.M))
_NODE_FIELD = re.compile(r"^(?:# |ℹ )(suites|pass|fail|cancelled|skipped|todo|duration_ms) ([\d.]+)$")


def _node(text: str) -> Iterator[Found]:
    for m in (m for rx in _NODES for m in rx.finditer(text)):
        if not _starts_line(text, m.start()):
            continue
        c: dict[str, int] = {}
        for x in _next_lines(text, m.end(), 7):
            fm = _NODE_FIELD.match(x)
            if fm is None:
                break
            if fm.group(1) != "duration_ms":
                c[fm.group(1)] = int(fm.group(2))
        if "pass" in c:
            failed = c.get("fail", 0) + c.get("cancelled", 0)
            yield _found(m.start(), "node", c["pass"], failed, c.get("skipped", 0) + c.get("todo", 0))


# --- jest, vitest, mocha -----------------------------------------------------

_JEST = re.compile(r"Tests:\s+(.*?),? ?(\d+) total$", re.M)
_VITEST = re.compile(r"Tests {1,2}(\d+ [a-z]+(?: \| \d+ [a-z]+)*) +\((\d+)\)$", re.M)
_NO_TESTS = re.compile(r"No test(?:s| files) found(?:, exiting with code \d+|: .*)$", re.M)
_MOCHA = re.compile(r" passing(?: \([^)\n]*\))?$", re.M)
_MOCHA_MORE = re.compile(r"^(\d+) (pending|failing)$")


def _js(text: str) -> Iterator[Found]:
    if "Tests" in text:
        for m in _JEST.finditer(text):
            if _starts_line(text, m.start()):
                c = _counts(m.group(1), ",")
                yield _found(m.start(), "jest", c.get("passed", 0), c.get("failed", 0), c.get("skipped", 0) + c.get("todo", 0))
        for m in _VITEST.finditer(text):
            if _starts_line(text, m.start(), indent=True):
                c = _counts(m.group(1), "|")
                yield _found(m.start(), "vitest", c.get("passed", 0), c.get("failed", 0), c.get("skipped", 0) + c.get("todo", 0))
    if "No test" in text:
        for m in _NO_TESTS.finditer(text):
            if _starts_line(text, m.start()) or _starts_line(text, m.start() - 7) and text.startswith("Error: ", m.start() - 7):
                line = m.group()
                runner = "jest" if line.startswith("No tests found") else "vitest" if ", exiting" in line else "mocha"
                yield _found(m.start(), runner, 0, 0, 0)
    if " passing" in text:
        for m in _MOCHA.finditer(text):
            s = text.rfind("\n", 0, m.start()) + 1
            n = text[s : m.start()].strip()
            if not n.isdigit():
                continue
            c = {"pending": 0, "failing": 0}
            for x in _next_lines(text, m.end(), 2):
                mm = _MOCHA_MORE.match(x)
                if mm:
                    c[mm.group(2)] = int(mm.group(1))
            yield _found(s, "mocha", int(n), c["failing"], c["pending"])


# --- Maven Surefire ----------------------------------------------------------

_SUREFIRE = re.compile(r"Tests run: (\d+), Failures: (\d+), Errors: (\d+), Skipped: (\d+)$", re.M)
_MAVEN_LEVEL = re.compile(r"\[(?:INFO|WARNING|WARN|ERROR)\] $")


def _surefire(text: str) -> Iterator[Found]:
    if "Tests run: " not in text:
        return
    for m in _SUREFIRE.finditer(text):
        s = text.rfind("\n", 0, m.start()) + 1
        if s != m.start() and not _MAVEN_LEVEL.fullmatch(text, s, m.start()):
            continue
        run, fail, err, skip = (int(g) for g in m.groups())
        yield _found(s, "surefire", run - fail - err - skip, fail + err, skip)


def _starts_line(text: str, pos: int, indent: bool = False) -> bool:
    """``pos`` is at a line start (or, with ``indent``, only blanks stand before it)."""
    if pos <= 0:
        return pos == 0
    if text[pos - 1] == "\n":
        return True
    if not indent:
        return False
    s = text.rfind("\n", 0, pos) + 1
    return not text[s:pos].strip(" \t")


_PARSERS = (_pytest, _unittest, _cargo, _go, _node, _js, _surefire)


def find_all(text: str) -> list[Found]:
    """Every summary in ``text`` (already :func:`plain_text`), in order of position."""
    return sorted((f for parse in _PARSERS for f in parse(text)), key=lambda f: f.pos)


def line_at(text: str, pos: int) -> str:
    """The whole line of ``text`` that holds offset ``pos``, without its line end."""
    return _line_at(text, pos)[2]


def parse_test_summary(output: str) -> TestSummary | None:
    """The runner's reported counts in ``output``, or ``None`` when no summary is recognised.

    Runners: pytest (``-q``, ``-v``, xdist, "no tests ran"), unittest,
    ``cargo test``, ``go test``, ``node --test`` (TAP and spec reporters),
    jest, vitest, mocha and Maven Surefire. See the module docstring for how
    failures, errors, expected failures and skips are counted, and for how
    several summaries are summed.
    """
    found = find_all(plain_text(output))
    if not found:
        return None
    runners = {f.runner for f in found}
    return TestSummary(
        runner=found[0].runner if len(runners) == 1 else "mixed",
        ran=sum(f.ran for f in found),
        passed=_sum([f.passed for f in found]),
        failed=_sum([f.failed for f in found]),
        skipped=_sum([f.skipped for f in found]),
    )


def _sum(values: list[int | None]) -> int | None:
    if any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None)

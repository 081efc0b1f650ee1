"""Python project detection: the tests that are there, the runner that finds them, the hints.

Pure code (file reads only), used by :mod:`._toolchain`.

Theory of operation: the test runner is chosen from what the repository
holds, not from configuration alone. :func:`find_tests` walks the project
(bounded, skipping virtualenvs, caches and build output) and sorts test
files by what can collect them:

* pytest collects ``test_*.py`` / ``*_test.py`` files holding ``test*``
  functions, ``Test*`` classes or ``unittest.TestCase`` subclasses — so
  whenever such a file exists the runner is pytest (it runs unittest suites
  too, and it reports how many tests ran);
* ``python -m unittest`` is used only where pytest would find nothing but
  unittest's own discovery (``test*.py``, e.g. ``tests.py``) finds TestCases.

Hints (tox.ini, noxfile.py, hatch scripts, a Makefile's test target) confirm
the runner and name what to install (tox ``extras``/``deps -r``, hatch
``features``); each one becomes a reason a person can check.
"""

from __future__ import annotations

import configparser
import os
import re
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["PyHints", "TestFiles", "find_tests", "read_hints"]

# Never walked for tests (pytest's own norecursedirs plus the usual caches and envs).
_NO_WALK = frozenset({
    ".git", ".hg", ".svn", "node_modules", ".venv", "venv", "env", ".env", "__pycache__",
    ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache", "dist", "build",
    "site-packages", ".eggs", "_darcs", "CVS", "{arch}",
})
_MAX_ENTRIES = 20_000
_MAX_DEPTH = 8
_PYTEST_NAME_RE = re.compile(r"^(test_.*|.*_test)\.py$")
_UNITTEST_NAME_RE = re.compile(r"^test.*\.py$")
_FUNC_RE = re.compile(r"^(?:async\s+)?def\s+test\w*\s*\(", re.MULTILINE)
_TEST_CLASS_RE = re.compile(r"^class\s+Test\w*\s*[:(]", re.MULTILINE)
_METHOD_RE = re.compile(r"^[ \t]+(?:async\s+)?def\s+test\w*\s*\(", re.MULTILINE)
_TESTCASE_RE = re.compile(r"^class\s+\w+\s*\([^)]*TestCase[^)]*\)", re.MULTILINE)


class TestFiles(msgspec.Struct, frozen=True, kw_only=True):
    """Test files under a project directory (paths relative to it, at most 5 kept each)."""

    pytest: list[str]  # files pytest's default discovery collects tests from
    unittest_only: list[str]  # files only unittest's discovery finds (TestCases)
    pytest_count: int = 0
    unittest_count: int = 0


class PyHints(msgspec.Struct, frozen=True, kw_only=True):
    """What tox/nox/hatch/Makefile say about testing this project."""

    runner: str | None = None  # "pytest" | "unittest" | None
    extras: list[str] = []  # extras to install for testing (tox extras, hatch features)
    requirements: list[str] = []  # requirement files named by tox deps (-r file)
    reasons: list[str] = []


def _read(path: Path, limit: int = 256 * 1024) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _pytest_collects(text: str) -> bool:
    if _FUNC_RE.search(text) or _TESTCASE_RE.search(text):
        return True
    return bool(_TEST_CLASS_RE.search(text) and _METHOD_RE.search(text))


def _nested_project(path: str) -> bool:
    """A directory that is a project of its own (its tests are its own checks')."""
    return any(os.path.isfile(os.path.join(path, n)) for n in _PROJECT_MARKERS)


_PROJECT_MARKERS = ("pyproject.toml", "setup.py", "package.json", "Cargo.toml", "go.mod",
                    "pom.xml")


def find_tests(project: Path) -> TestFiles:
    """The test files under ``project`` pytest collects, and those only unittest finds.

    The walk is bounded (depth and entry count) and skips environments, caches
    and nested projects; it reads only files whose names look like tests.
    """
    pytest_files: list[str] = []
    unittest_files: list[str] = []
    counts = [0, 0]
    seen = 0
    stack: list[tuple[Path, int]] = [(project, 0)]
    while stack and seen < _MAX_ENTRIES:
        d, depth = stack.pop()
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            seen += 1
            name = e.name
            if e.is_dir(follow_symlinks=False):
                if depth < _MAX_DEPTH and not name.startswith(".") and name not in _NO_WALK \
                        and not name.endswith(".egg-info") and not _nested_project(e.path):
                    stack.append((Path(e.path), depth + 1))
                continue
            if not name.endswith(".py") or not _UNITTEST_NAME_RE.match(name) and \
                    not _PYTEST_NAME_RE.match(name):
                continue
            text = _read(Path(e.path))
            rel = os.path.relpath(e.path, project)
            if _PYTEST_NAME_RE.match(name) and _pytest_collects(text):
                counts[0] += 1
                if len(pytest_files) < 5:
                    pytest_files.append(rel)
            elif _UNITTEST_NAME_RE.match(name) and _TESTCASE_RE.search(text):
                counts[1] += 1
                if len(unittest_files) < 5:
                    unittest_files.append(rel)
    return TestFiles(pytest=sorted(pytest_files), unittest_only=sorted(unittest_files),
                     pytest_count=counts[0], unittest_count=counts[1])


def _runner_in(text: str) -> str | None:
    if re.search(r"(?<![\w-])(py\.test|pytest)(?![\w-])", text):
        return "pytest"
    if re.search(r"-m\s+unittest\b", text):
        return "unittest"
    return None


def _values(raw: str) -> list[str]:
    """tox multi-line values of the test environments: unconditional lines and lines whose
    factor names tests (``tests: x``); substitutions (``{[testenv:docs]extras}``) dropped."""
    out = []
    for line in raw.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"^([\w{},.!-]+):\s", line)
        if m:
            if "test" not in m.group(1):
                continue
            line = line[m.end():].strip()
        out += [v.strip() for v in line.split(",") if v.strip() and "{" not in v]
    return out


def _tox_hints(d: Path) -> tuple[str | None, list[str], list[str]]:
    text = _read(d / "tox.ini")
    if not text:
        return None, [], []
    cfg = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        cfg.read_string(text)
    except configparser.Error:
        return _runner_in(text), [], []
    runner: str | None = None
    extras: list[str] = []
    reqs: list[str] = []
    for section in cfg.sections():
        if not (section == "testenv" or section.startswith("testenv:")):
            continue
        commands = cfg.get(section, "commands", fallback="")
        runner = runner or _runner_in(commands)
        for x in _values(cfg.get(section, "extras", fallback="")):
            if x not in extras and ("test" in x or section == "testenv"):
                extras.append(x)
        for dep in cfg.get(section, "deps", fallback="").splitlines():
            m = re.match(r"^\s*(?:[\w{},.-]+:\s*)?-r\s*(\S+)", dep)
            if m and "{" not in m.group(1) and m.group(1) not in reqs and "doc" not in m.group(1):
                reqs.append(m.group(1))
    return runner, extras, reqs


def _hatch_hints(pyproject: dict[str, Any]) -> tuple[str | None, list[str]]:
    envs = pyproject.get("tool", {}).get("hatch", {}).get("envs", {})
    if not isinstance(envs, dict):
        return None, []
    runner: str | None = None
    features: list[str] = []
    for name, env in envs.items():
        if not isinstance(env, dict) or "doc" in str(name):
            continue
        scripts = env.get("scripts", {})
        text = " ".join(str(v) for v in scripts.values()) if isinstance(scripts, dict) else ""
        found = _runner_in(text)
        runner = runner or found
        if found or "test" in str(name):
            feats = env.get("features", [])
            features += [f for f in feats if isinstance(f, str) and f not in features]
    return runner, features


def _make_hint(d: Path) -> str | None:
    text = _read(d / "Makefile") or _read(d / "GNUmakefile") or _read(d / "makefile")
    m = re.search(r"^(?:test|check|tests)\s*:[^=\n]*\n((?:\t.*\n?)+)", text, re.MULTILINE)
    return _runner_in(m.group(1)) if m else None


def read_hints(d: Path, pyproject: dict[str, Any]) -> PyHints:
    """Testing hints from tox.ini, noxfile.py, hatch environments and the Makefile in ``d``."""
    reasons: list[str] = []
    runner: str | None = None
    tox_runner, extras, reqs = _tox_hints(d)
    if tox_runner:
        runner = tox_runner
        reasons.append(f"tox.ini runs {tox_runner}")
    if extras:
        reasons.append(f"tox.ini installs extras {', '.join(extras)}")
    if reqs:
        reasons.append(f"tox.ini installs {', '.join(reqs)}")
    nox_runner = _runner_in(_read(d / "noxfile.py"))
    if nox_runner:
        runner = runner or nox_runner
        reasons.append(f"noxfile.py runs {nox_runner}")
    hatch_runner, features = _hatch_hints(pyproject)
    if hatch_runner:
        runner = runner or hatch_runner
        reasons.append(f"a hatch environment script runs {hatch_runner}")
    for f in features:
        if f not in extras:
            extras.append(f)
    make_runner = _make_hint(d)
    if make_runner:
        runner = runner or make_runner
        reasons.append(f"the Makefile's test target runs {make_runner}")
    return PyHints(runner=runner, extras=extras, requirements=reqs, reasons=reasons)

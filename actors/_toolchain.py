"""Toolchain detection: which build/test tools a repository uses.

Pure code: it only reads files in the repository (no subprocess, no trio), so
it is cheap and tested directly on small real repositories.

Theory of operation: :func:`detect_toolchains` looks for marker files
(``pyproject.toml``, ``package.json``, ``Cargo.toml``, ``go.mod``,
``pom.xml``, ``build.gradle``, ``Makefile`` …) at the repository root and in
its immediate subdirectories (``frontend/``, ``backend/`` …), and returns one
:class:`Toolchain` per (kind, directory), each with the install, build and
test commands and a human reason for every choice.

Commands are shell command strings meant to run from the *repository root*
(a toolchain found in a subdirectory gets a ``cd sub && `` prefix).
Documentation, example and fixture directories (``docs/``, ``examples/``,
``tests/`` …) are never taken for projects of their own, and a subdirectory
counts as a Python project only when it is a real package (pyproject with
``[project]``/``[build-system]``, setup.py, setup.cfg ``[metadata]``).

:func:`detect` combines them into what a run does: the install steps (Python
and Node: run once per run, before the first check, in the run's own
environment — see :mod:`._install`), the checks, and the reasons.
``autopackctl detect REPO`` prints it. Python test discovery lives in
:mod:`._pydetect`.
"""

from __future__ import annotations

import configparser
import json
import logging
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from ._pydetect import PyHints, TestFiles, find_tests, read_hints

LOGGER = logging.getLogger(__name__)

__all__ = [
    "Detection",
    "Toolchain",
    "detect",
    "default_checks",
    "detect_toolchains",
    "repo_modules",
]

# Directories never searched for a nested toolchain or for Python modules.
_SKIP_DIRS = frozenset({
    ".git", ".hg", ".svn", "node_modules", ".venv", "venv", "env", ".env", "__pycache__",
    ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache", "dist", "build", "target",
    ".idea", ".vscode", "site-packages", ".eggs", "vendor", "third_party",
})
# Subdirectories that never hold a project of their own for detection: documentation,
# examples and test fixtures (a docs/requirements.txt or an example's package.json is not
# the repository's test suite).
_NOT_PROJECTS = frozenset({
    "docs", "doc", "documentation", "examples", "example", "samples", "sample", "demo",
    "tests", "test", "testing", "fixtures", "testdata", "test_data", "benchmarks", "bench",
})
_NPM_DEFAULT_TEST = 'echo "Error: no test specified" && exit 1'
_MAKE_TARGET_RE = re.compile(r"^([A-Za-z0-9_./-]+)\s*:(?!=)", re.MULTILINE)
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Toolchain(msgspec.Struct, frozen=True, kw_only=True):
    """One detected toolchain of a repository.

    ``install``/``build``/``test`` are shell command strings run from the
    repository root. ``reasons`` explains each choice in words a person can
    check. ``source_dirs`` are repo-relative directories holding the code and
    tests (``"."`` when the code sits at the top). ``env`` names the isolated
    environment the run needs (``"venv"`` for Python, else ``None``).
    ``root`` is the directory (repo-relative) where the marker file was found.
    """

    name: str  # python | node | rust | go | java | make
    manager: str  # pip | uv | poetry | npm | yarn | pnpm | cargo | go | mvn | gradle | make
    install: list[str]
    build: list[str]
    test: list[str]
    reasons: list[str]
    source_dirs: list[str]
    env: str | None = None
    root: str = "."
    runner: str | None = None  # the test runner: pytest | unittest | npm | cargo | go | …
    install_inputs: list[str] = []  # repo-relative files whose content decides the install


def _read_text(path: Path, limit: int = 512 * 1024) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _read_toml(path: Path) -> dict[str, Any]:
    text = _read_text(path)
    if not text:
        return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        LOGGER.debug("unparsable TOML: %s", path)
        return {}


def _rel(root: str, name: str) -> str:
    return name if root == "." else f"{root}/{name}"


def _in_dir(root: str, cmd: str) -> str:
    return cmd if root == "." else f"cd {root} && {cmd}"


def _existing_dirs(d: Path, root: str, names: tuple[str, ...]) -> list[str]:
    return [_rel(root, n) for n in names if (d / n).is_dir()]


# --------------------------------------------------------------------- python

def _python_manager(d: Path, pyproject: dict[str, Any]) -> tuple[str, str]:
    tool = pyproject.get("tool", {})
    if (d / "uv.lock").is_file():
        return "uv", "uv.lock present: uv manages the environment"
    if (d / "poetry.lock").is_file():
        return "poetry", "poetry.lock present: poetry manages the environment"
    if isinstance(tool, dict) and "poetry" in tool:
        return "poetry", "[tool.poetry] in pyproject.toml: poetry manages the environment"
    if isinstance(tool, dict) and "uv" in tool:
        # uv sync --locked/--frozen refuse without a lock; writing one would change the repo
        return "pip", "[tool.uv] but no uv.lock: uv pip installs into the run's virtualenv"
    return "pip", "no uv.lock or poetry.lock: plain pip into the run's virtualenv"


_TEST_EXTRAS = ("test", "tests", "testing")


def _python_test_extras(pyproject: dict[str, Any], setup_cfg: configparser.ConfigParser,
                        hinted: list[str]) -> list[str]:
    """The extras that bring the test dependencies: those tox/hatch name, else a
    ``test``/``tests``/``testing`` extra, else ``dev``."""
    declared: list[str] = []
    opt = pyproject.get("project", {}).get("optional-dependencies", {})
    if isinstance(opt, dict):
        declared = [str(k) for k in opt]
    elif setup_cfg.has_section("options.extras_require"):
        declared = list(setup_cfg.options("options.extras_require"))
    if not declared and setup_cfg.has_section("options.extras_require"):
        declared = list(setup_cfg.options("options.extras_require"))
    picked = [x for x in hinted if x in declared]
    if not picked:
        picked = [x for x in declared if x in _TEST_EXTRAS][:1]
    if not picked and "dev" in declared:
        picked = ["dev"]
    return picked


_PYTEST_DEP_RE = re.compile(r"""(?:^|[\s"',\[])pytest(?=[\s"',<>=~!;\]\[]|$)""", re.MULTILINE)


def _declares_pytest(dep_text: str) -> bool:
    """pytest named as a requirement (not ``[tool:pytest]`` or ``[tool.pytest…]``)."""
    return _PYTEST_DEP_RE.search(dep_text) is not None


def _test_groups(pyproject: dict[str, Any], manager: str) -> list[str]:
    """Dependency groups with test dependencies that the manager would not install by
    default: uv installs only ``dev`` (PEP 735 ``[dependency-groups]``), poetry every group
    not marked ``optional``."""
    names: list[str] = []
    if manager == "uv":
        groups = pyproject.get("dependency-groups", {})
        if isinstance(groups, dict):
            names = [str(g) for g in groups if str(g) != "dev"]
    else:
        tool = pyproject.get("tool", {})
        poetry = tool.get("poetry", {}) if isinstance(tool, dict) else {}
        groups = poetry.get("group", {}) if isinstance(poetry, dict) else {}
        if isinstance(groups, dict):
            names = [str(g) for g, spec in groups.items()
                     if isinstance(spec, dict) and spec.get("optional") is True]
    return [g for g in names if re.fullmatch(r"[A-Za-z0-9._-]+", g) and "test" in g.lower()]


def _pytest_config(d: Path, pyproject: dict[str, Any],
                   setup_cfg: configparser.ConfigParser) -> str | None:
    """Where the project configures pytest, or None."""
    tool = pyproject.get("tool", {})
    if isinstance(tool, dict) and "pytest" in tool:
        return "[tool.pytest] in pyproject.toml"
    if (d / "pytest.ini").is_file():
        return "pytest.ini"
    if (d / "conftest.py").is_file():
        return "conftest.py"
    if setup_cfg.has_section("tool:pytest"):
        return "[tool:pytest] in setup.cfg"
    if "[pytest]" in _read_text(d / "tox.ini"):
        return "[pytest] in tox.ini"
    return None


def _requirement_files(d: Path, hinted: list[str]) -> list[str]:
    """requirements.txt and the test/dev requirement files (never docs ones)."""
    names: list[str] = []
    for p in sorted(d.glob("*requirements*.txt")) + sorted(d.glob("requirements/*.txt")):
        rel = p.relative_to(d).as_posix()
        low = rel.lower()
        if not p.is_file() or "doc" in low:
            continue
        if rel == "requirements.txt" or re.search(r"test|dev|ci\b", low):
            names.append(rel)
    for rel in hinted:
        if rel not in names and (d / rel).is_file():
            names.append(rel)
    return names


def _python_source_dirs(d: Path, root: str) -> list[str]:
    dirs: list[str] = []
    if (d / "src").is_dir():
        dirs.append(_rel(root, "src"))
    else:
        for mod in _modules_in(d, src_layout=False):
            if (d / mod).is_dir():
                dirs.append(_rel(root, mod))
    dirs += _existing_dirs(d, root, ("tests", "test"))
    return dirs or [root]


def _is_real_package(d: Path, pyproject: dict[str, Any]) -> bool:
    if (d / "setup.py").is_file():
        return True
    if pyproject and any(k in pyproject for k in ("project", "build-system")):
        return True
    if isinstance(pyproject.get("tool"), dict) and "poetry" in pyproject["tool"]:
        return True
    return "[metadata]" in _read_text(d / "setup.cfg")


def _python_test_command(d: Path, root: str, tests: TestFiles, hints: PyHints,
                         config: str | None, reasons: list[str]) -> tuple[list[str], str | None]:
    """The test command and its runner, with the reason for the choice appended."""
    if tests.pytest_count:
        shown = ", ".join(tests.pytest) + (" …" if tests.pytest_count > len(tests.pytest) else "")
        why = [f"{tests.pytest_count} test file(s) pytest collects ({shown})"]
        if config:
            why.append(f"pytest configured in {config}")
        reasons.append("tests: pytest — " + "; ".join(why) + " (pytest runs unittest suites too)")
        return [_in_dir(root, _PYTEST)], "pytest"
    if tests.unittest_count:
        shown = ", ".join(tests.unittest_only)
        reasons.append(f"tests: python -m unittest — {tests.unittest_count} file(s) with "
                       f"TestCases only unittest's discovery finds ({shown})")
        return [_in_dir(root, "python -m unittest discover -p 'test*.py'")], "unittest"
    if config or hints.runner == "pytest":
        reasons.append(f"tests: pytest — configured ({config or hints.reasons[0]}), though no "
                       "test file was found by name; it will report what it collects")
        return [_in_dir(root, _PYTEST)], "pytest"
    reasons.append("tests: none found (no test_*.py / *_test.py with tests, no TestCase): "
                   "no test command")
    return [], None


_PYTEST = "python -m pytest -q"


def _detect_python(d: Path, root: str) -> Toolchain | None:
    markers = [n for n in ("pyproject.toml", "setup.py", "setup.cfg") if (d / n).is_file()]
    pyproject = _read_toml(d / "pyproject.toml") if "pyproject.toml" in markers else {}
    setup_cfg = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        setup_cfg.read_string(_read_text(d / "setup.cfg"))
    except configparser.Error:
        pass
    hints = read_hints(d, pyproject)
    reqs = _requirement_files(d, hints.requirements)
    if root != "." and not _is_real_package(d, pyproject):
        return None  # a requirements file or stray config in a subdirectory is not a project
    tests = find_tests(d) if (markers or reqs or root == ".") else None
    if not markers and not reqs and not (tests and (tests.pytest_count or tests.unittest_count)):
        return None
    assert tests is not None
    found = markers + reqs or ["Python test files"]
    reasons = [f"Python: found {', '.join(found)} in {root}"]
    manager, why = _python_manager(d, pyproject)
    reasons.append(why)
    reasons += hints.reasons
    installable = _is_real_package(d, pyproject)
    extras = _python_test_extras(pyproject, setup_cfg, hints.extras)
    target = "." + (f"[{','.join(extras)}]" if extras else "")
    install: list[str] = []
    if manager == "uv":
        groups = "".join(f" --group {g}" for g in _test_groups(pyproject, "uv"))
        install.append(_in_dir(root, f"uv sync --locked --all-extras{groups}"))
        reasons.append("uv: the locked versions, refused when uv.lock is out of date "
                       "with pyproject.toml (--locked)")
    elif manager == "poetry":
        groups = "".join(f" --with {g}" for g in _test_groups(pyproject, "poetry"))
        install.append(_in_dir(root, f"poetry install --no-interaction --all-extras{groups}"))
        reasons.append("poetry: the locked versions, refused when poetry.lock is out of date "
                       "with pyproject.toml")
    else:
        if installable:
            install.append(_in_dir(root, f"python -m pip install -e '{target}'"))
            reasons.append(f"installable project: pip install -e '{target}'"
                           + (f" (test extras: {', '.join(extras)})" if extras else ""))
        for req in reqs:
            install.append(_in_dir(root, f"python -m pip install -r {req}"))
    dep_text = _read_text(d / "pyproject.toml") + _read_text(d / "setup.cfg") + _read_text(
        d / "setup.py") + "".join(_read_text(d / r) for r in reqs)
    config = _pytest_config(d, pyproject, setup_cfg)
    test, runner = _python_test_command(d, root, tests, hints, config, reasons)
    if runner == "pytest" and not _declares_pytest(dep_text):
        install.append(_in_dir(root, "python -m pip install pytest"))
        reasons.append("pytest is not a declared dependency: added to the run's environment")
    inputs = [_rel(root, n) for n in ("pyproject.toml", "setup.py", "setup.cfg", "uv.lock",
                                      "poetry.lock") if (d / n).is_file()] + \
        [_rel(root, r) for r in reqs]
    return Toolchain(name="python", manager=manager, install=install, build=[], test=test,
                     reasons=reasons, source_dirs=_python_source_dirs(d, root), env="venv",
                     root=root, runner=runner, install_inputs=inputs)


# ----------------------------------------------------------------------- node

def _npm_placeholder(script: str) -> bool:
    """npm init's ``echo "Error: no test specified" && exit 1`` (any quoting/spacing)."""
    return script == _NPM_DEFAULT_TEST or "no test specified" in script and "exit 1" in script


def _detect_node(d: Path, root: str) -> Toolchain | None:
    if not (d / "package.json").is_file():
        return None
    try:
        pkg = json.loads(_read_text(d / "package.json"))
    except json.JSONDecodeError:
        pkg = {}
    if not isinstance(pkg, dict):
        pkg = {}
    scripts = pkg.get("scripts") or {}
    scripts = scripts if isinstance(scripts, dict) else {}
    reasons = [f"Node: found package.json in {root}"]
    declared = str(pkg.get("packageManager") or "")
    if (d / "pnpm-lock.yaml").is_file():
        manager, install = "pnpm", "pnpm install --frozen-lockfile"
        reasons.append("pnpm-lock.yaml present: pnpm")
    elif (d / "yarn.lock").is_file():
        manager, install = "yarn", "yarn install --frozen-lockfile"
        reasons.append("yarn.lock present: yarn")
    elif (d / "package-lock.json").is_file() or (d / "npm-shrinkwrap.json").is_file():
        manager, install = "npm", "npm ci"
        reasons.append("package-lock.json present: npm ci")
    elif declared.split("@")[0] in ("pnpm", "yarn"):
        manager = declared.split("@")[0]
        install = f"{manager} install"
        reasons.append(f"packageManager field names {manager} (no lockfile)")
    else:
        manager, install = "npm", "npm install"
        reasons.append("no lockfile: npm install")
    run = "npm run" if manager == "npm" else manager
    build = []
    if "build" in scripts:
        build.append(_in_dir(root, f"{run} build"))
        reasons.append("build: the package.json build script")
    test = []
    script = str(scripts.get("test", "")).strip()
    if script and not _npm_placeholder(script):
        test.append(_in_dir(root, f"{manager} test"))
        reasons.append(f"tests: the package.json test script ({script[:60]})")
    elif script:
        reasons.append("the package.json test script is npm init's placeholder "
                       "(\"no test specified\"): no test command")
    else:
        reasons.append("no test script in package.json: no test command")
    src = _existing_dirs(d, root, ("src", "lib", "app", "pages", "components", "test",
                                   "tests", "__tests__"))
    inputs = [_rel(root, n) for n in ("package.json", "package-lock.json", "npm-shrinkwrap.json",
                                      "yarn.lock", "pnpm-lock.yaml") if (d / n).is_file()]
    return Toolchain(name="node", manager=manager, install=[_in_dir(root, install)], build=build,
                     test=test, reasons=reasons, source_dirs=src or [root], root=root,
                     runner=manager if test else None, install_inputs=inputs)


# ------------------------------------------------------------- rust, go, java

def _detect_rust(d: Path, root: str) -> Toolchain | None:
    if not (d / "Cargo.toml").is_file():
        return None
    cargo = _read_toml(d / "Cargo.toml")
    reasons = [f"Rust: found Cargo.toml in {root}"]
    src = _existing_dirs(d, root, ("src", "tests", "benches", "examples"))
    members = cargo.get("workspace", {}).get("members", [])
    if isinstance(members, list) and members:
        reasons.append(f"cargo workspace with {len(members)} members: --workspace")
        src += [_rel(root, m.rstrip("/*")) for m in members if isinstance(m, str)]
        build, test = "cargo build --workspace", "cargo test --workspace"
    else:
        build, test = "cargo build", "cargo test"
    return Toolchain(name="rust", manager="cargo", install=[_in_dir(root, "cargo fetch")],
                     build=[_in_dir(root, build)], test=[_in_dir(root, test)],
                     reasons=reasons, source_dirs=sorted(set(src)) or [root], root=root,
                     runner="cargo")


def _detect_go(d: Path, root: str) -> Toolchain | None:
    if not (d / "go.mod").is_file():
        return None
    reasons = [f"Go: found go.mod in {root}", "go build ./... and go test ./... cover every package"]
    src = _existing_dirs(d, root, ("cmd", "pkg", "internal"))
    return Toolchain(name="go", manager="go", install=[_in_dir(root, "go mod download")],
                     build=[_in_dir(root, "go build ./...")], test=[_in_dir(root, "go test ./...")],
                     reasons=reasons, source_dirs=src or [root], root=root, runner="go")


def _detect_java(d: Path, root: str) -> Toolchain | None:
    src = _existing_dirs(d, root, ("src",)) or [root]
    if (d / "pom.xml").is_file():
        wrapper = (d / "mvnw").is_file()
        mvn = "./mvnw" if wrapper else "mvn"
        reasons = [f"Java: found pom.xml in {root}",
                   "Maven wrapper ./mvnw present" if wrapper else "no ./mvnw: system mvn"]
        return Toolchain(name="java", manager="mvn",
                         install=[_in_dir(root, f"{mvn} -B -q dependency:resolve")],
                         build=[_in_dir(root, f"{mvn} -B -q compile")],
                         test=[_in_dir(root, f"{mvn} -B -q test")],
                         reasons=reasons, source_dirs=src, root=root, runner="surefire")
    gradle_files = [n for n in ("build.gradle", "build.gradle.kts") if (d / n).is_file()]
    if gradle_files:
        wrapper = (d / "gradlew").is_file()
        gradle = "./gradlew" if wrapper else "gradle"
        reasons = [f"Java: found {gradle_files[0]} in {root}",
                   "Gradle wrapper ./gradlew present" if wrapper else "no ./gradlew: system gradle"]
        return Toolchain(name="java", manager="gradle", install=[],
                         build=[_in_dir(root, f"{gradle} assemble")],
                         test=[_in_dir(root, f"{gradle} test")],
                         reasons=reasons, source_dirs=src, root=root, runner="gradle")
    return None


# ----------------------------------------------------------------------- make

def _detect_make(d: Path, root: str) -> Toolchain | None:
    name = next((n for n in ("GNUmakefile", "Makefile", "makefile") if (d / n).is_file()), None)
    if name is None:
        return None
    targets = set(_MAKE_TARGET_RE.findall(_read_text(d / name)))
    reasons = [f"Make: found {name} in {root}"]
    test: list[str] = []
    for t in ("test", "check"):
        if t in targets:
            test = [_in_dir(root, f"make {t}")]
            reasons.append(f"tests: the {t!r} target")
            break
    else:
        reasons.append("no test/check target in the Makefile")
    build: list[str] = []
    if "build" in targets:
        build = [_in_dir(root, "make build")]
    elif "all" in targets:
        build = [_in_dir(root, "make")]
    return Toolchain(name="make", manager="make", install=[], build=build, test=test,
                     runner="make" if test else None, reasons=reasons, source_dirs=_existing_dirs(d, root, ("src", "tests", "test"))
                     or [root], root=root)


_DETECTORS = (_detect_python, _detect_node, _detect_rust, _detect_go, _detect_java, _detect_make)


def detect_toolchains(repo: Path) -> list[Toolchain]:
    """Every toolchain found at ``repo`` and in its immediate subdirectories.

    Order: the root's toolchains first (Python, Node, Rust, Go, Java, Make),
    then each subdirectory's in name order. An unreadable or missing
    directory yields ``[]``.
    """
    repo = Path(repo)
    found: list[Toolchain] = []
    dirs: list[tuple[Path, str]] = [(repo, ".")]
    try:
        subs = sorted(e.name for e in os.scandir(repo)
                      if e.is_dir() and not e.name.startswith(".") and e.name not in _SKIP_DIRS
                      and e.name.lower() not in _NOT_PROJECTS)
    except OSError:
        return []
    dirs += [(repo / s, s) for s in subs]
    for d, root in dirs:
        for detect in _DETECTORS:
            tc = detect(d, root)
            if tc is not None:
                found.append(tc)
    return found


class Detection(msgspec.Struct, frozen=True, kw_only=True):
    """What a run on a repository does when its spec leaves it to detection.

    ``install``: shell commands run once per run before the first check, from
    the repository root, in the run's environment (Python and Node toolchains;
    Rust/Go/Java fetch on their own). ``checks``: what a phase without
    ``checks`` runs. ``env``: ``"venv"`` when the run needs its own Python
    virtualenv. ``install_inputs``: the files whose content decides the
    install (the ready-environment cache key).
    """

    toolchains: list[Toolchain]
    install: list[str]
    checks: list[str]
    reasons: list[str]
    env: str | None = None
    install_inputs: list[str] = []


def detect(repo: Path) -> Detection:
    """Detect toolchains, install steps and default checks of ``repo`` (pure file reads).

    Per directory the checks are the language toolchains' build (Node, Go:
    tests do not imply a build) and test commands; a Makefile's test target
    is used only where no language toolchain in the same directory has one.
    """
    toolchains = detect_toolchains(repo)
    checks: list[str] = []
    reasons: list[str] = []
    install: list[str] = []
    inputs: list[str] = []
    roots_with_tests = {tc.root for tc in toolchains if tc.name != "make" and tc.test}
    for tc in toolchains:
        if tc.name in ("python", "node"):
            install += [c for c in tc.install if c not in install]
            inputs += [f for f in tc.install_inputs if f not in inputs]
        if tc.name == "make" and tc.root in roots_with_tests:
            reasons.append(f"{tc.root}: Makefile test target skipped, the language "
                           "toolchain's test command runs instead")
            continue
        cmds = (tc.build if tc.name in ("node", "go") else []) + tc.test
        for c in cmds:
            if c not in checks:
                checks.append(c)
        if cmds:
            reasons.append(f"{tc.name} ({tc.manager}) in {tc.root}: {'; '.join(cmds)}")
    if not checks:
        reasons.append("no toolchain with a test command found")
    env = "venv" if any(tc.env == "venv" for tc in toolchains) else None
    return Detection(toolchains=toolchains, install=install, checks=checks, reasons=reasons,
                     env=env, install_inputs=inputs)


def default_checks(repo: Path) -> tuple[list[str], list[str]]:
    """The check commands a phase runs when it lists none, and why (see :func:`detect`).

    Returns ``(checks, reasons)``; ``([], [reason])`` when nothing is found.
    """
    d = detect(repo)
    return d.checks, d.reasons


# ------------------------------------------------------------- repo modules

def _modules_in(d: Path, *, src_layout: bool) -> list[str]:
    names: list[str] = []
    try:
        entries = list(os.scandir(d))
    except OSError:
        return names
    for e in entries:
        if e.name.startswith(".") or e.name in _SKIP_DIRS:
            continue
        if e.is_file() and e.name.endswith(".py"):
            stem = e.name[:-3]
            if _IDENT_RE.match(stem) and stem not in ("setup", "conftest", "noxfile", "__init__"):
                names.append(stem)
        elif e.is_dir() and _IDENT_RE.match(e.name):
            p = Path(e.path)
            if (p / "__init__.py").is_file() or (src_layout and any(p.glob("*.py"))):
                names.append(e.name)
    return names


def _declared_modules(pyproject: dict[str, Any]) -> list[str]:
    names: list[str] = []
    st = pyproject.get("tool", {}).get("setuptools", {})
    pkgs = st.get("packages") if isinstance(st, dict) else None
    if isinstance(pkgs, list):
        names += [p.split(".")[0] for p in pkgs if isinstance(p, str)]
    pd = st.get("package-dir") if isinstance(st, dict) else None
    if isinstance(pd, dict):
        names += [k.split(".")[0] for k in pd if isinstance(k, str) and k]
    proj = pyproject.get("project", {}).get("name")
    if isinstance(proj, str):
        # The distribution's own name is, most often, its import name too.
        names.append(re.sub(r"[-.]+", "_", proj).lower())
    return [n for n in names if _IDENT_RE.match(n)]


def repo_modules(repo: Path) -> list[str]:
    """The repository's own top-level Python module and package names, sorted.

    Looks at the root and ``src/`` (src layout), at every immediate
    subdirectory holding a Python project, and at the names pyproject.toml
    declares. The classifier uses it to tell a missing dependency from a
    module of the repo that was not found (``wrong_working_dir``).
    """
    repo = Path(repo)
    names: set[str] = set()
    roots = [repo] + [tc_root for tc_root in
                      (repo / tc.root for tc in detect_toolchains(repo) if tc.name == "python")
                      if tc_root != repo]
    for d in roots:
        names.update(_modules_in(d, src_layout=False))
        if (d / "src").is_dir():
            names.update(_modules_in(d / "src", src_layout=True))
        names.update(_declared_modules(_read_toml(d / "pyproject.toml")))
    return sorted(names)

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
(a toolchain found in a subdirectory gets a ``cd sub && `` prefix). Install
commands are run once per worktree by the run actor before the first check.

Python is special: each run gets its own virtualenv inside its worktree so
runs never install into each other or into the daemon (``env == "venv"``).
The run actor executes :func:`python_env_commands` (argv lists, no shell) to
create and fill it, and runs every check with :func:`venv_environ` — the
venv's ``bin`` first on ``PATH`` and ``VIRTUAL_ENV`` set — so ``python``,
``pytest`` and the installed console scripts are the venv's.
"""

from __future__ import annotations

import configparser
import json
import logging
import os
import re
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

LOGGER = logging.getLogger(__name__)

__all__ = [
    "Toolchain",
    "default_checks",
    "detect_toolchains",
    "python_env_commands",
    "repo_modules",
    "venv_environ",
]

# Directories never searched for a nested toolchain or for Python modules.
_SKIP_DIRS = frozenset({
    ".git", ".hg", ".svn", "node_modules", ".venv", "venv", "env", ".env", "__pycache__",
    ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache", "dist", "build", "target",
    ".idea", ".vscode", "site-packages", ".eggs", "vendor", "third_party",
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
        return "uv", "[tool.uv] in pyproject.toml: uv manages the environment"
    return "pip", "no uv.lock or poetry.lock: plain pip into the run's virtualenv"


def _python_test_extras(pyproject: dict[str, Any], setup_cfg: configparser.ConfigParser) -> list[str]:
    extras: list[str] = []
    opt = pyproject.get("project", {}).get("optional-dependencies", {})
    if isinstance(opt, dict):
        extras = [k for k in opt if k in ("test", "tests", "testing", "dev")]
    if not extras and setup_cfg.has_section("options.extras_require"):
        extras = [k for k in setup_cfg.options("options.extras_require")
                  if k in ("test", "tests", "testing", "dev")]
    return sorted(extras)


_PYTEST_DEP_RE = re.compile(r"""(?:^|[\s"',\[])pytest(?=[\s"',<>=~!;\]\[]|$)""", re.MULTILINE)


def _declares_pytest(dep_text: str) -> bool:
    """pytest named as a requirement (not ``[tool:pytest]`` or ``[tool.pytest…]``)."""
    return _PYTEST_DEP_RE.search(dep_text) is not None


def _uses_pytest(d: Path, pyproject: dict[str, Any], setup_cfg: configparser.ConfigParser,
                 dep_text: str) -> str | None:
    """Why pytest is the test runner, or None when nothing points at it."""
    if "pytest" in pyproject.get("tool", {}):
        return "[tool.pytest] in pyproject.toml"
    if (d / "pytest.ini").is_file():
        return "pytest.ini present"
    if (d / "conftest.py").is_file():
        return "conftest.py present"
    if setup_cfg.has_section("tool:pytest"):
        return "[tool:pytest] in setup.cfg"
    if "[pytest]" in _read_text(d / "tox.ini"):
        return "[pytest] in tox.ini"
    if _declares_pytest(dep_text):
        return "pytest is a declared dependency"
    for tdir in ("tests", "test"):
        t = d / tdir
        if t.is_dir():
            try:
                if any(p.name.startswith("test_") or p.name.endswith("_test.py")
                       for p in t.rglob("*.py")):
                    return f"{tdir}/ holds test_*.py files"
            except OSError:
                pass
    return None


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


def _detect_python(d: Path, root: str) -> Toolchain | None:
    markers = [n for n in ("pyproject.toml", "setup.py", "setup.cfg") if (d / n).is_file()]
    reqs = sorted(p.name for p in d.glob("requirements*.txt") if p.is_file())
    if not markers and not reqs:
        return None
    pyproject = _read_toml(d / "pyproject.toml") if "pyproject.toml" in markers else {}
    setup_cfg = configparser.ConfigParser(interpolation=None)
    try:
        setup_cfg.read_string(_read_text(d / "setup.cfg"))
    except configparser.Error:
        pass
    reasons = [f"Python: found {', '.join(markers + reqs)} in {root}"]
    manager, why = _python_manager(d, pyproject)
    reasons.append(why)
    installable = "setup.py" in markers or (
        "pyproject.toml" in markers and ("build-system" in pyproject or "project" in pyproject))
    extras = _python_test_extras(pyproject, setup_cfg)
    target = "." + (f"[{','.join(extras)}]" if extras else "")
    install: list[str] = []
    if manager == "uv":
        install.append(_in_dir(root, "uv sync --frozen --all-extras"))
    elif manager == "poetry":
        install.append(_in_dir(root, "poetry install --no-interaction"))
    else:
        if installable:
            install.append(_in_dir(root, f"python -m pip install -e '{target}'"))
            reasons.append(f"installable project: pip install -e '{target}'")
        for req in reqs:
            install.append(_in_dir(root, f"python -m pip install -r {req}"))
    dep_text = _read_text(d / "pyproject.toml") + _read_text(d / "setup.cfg") + _read_text(
        d / "setup.py") + "".join(_read_text(d / r) for r in reqs)
    pytest_why = _uses_pytest(d, pyproject, setup_cfg, dep_text)
    if pytest_why:
        test = [_in_dir(root, "python -m pytest -q")]
        reasons.append(f"tests: pytest ({pytest_why})")
        if manager == "pip" and not _declares_pytest(dep_text):
            install.append(_in_dir(root, "python -m pip install pytest"))
            reasons.append("pytest is not a declared dependency: installed into the run's venv")
    else:
        test = [_in_dir(root, "python -m unittest")]
        reasons.append("tests: no pytest configuration or tests/ dir, using python -m unittest")
    reasons.append("each run gets its own virtualenv in its worktree; checks run with its bin "
                   "first on PATH")
    return Toolchain(name="python", manager=manager, install=install, build=[], test=test,
                     reasons=reasons, source_dirs=_python_source_dirs(d, root), env="venv",
                     root=root)


# ----------------------------------------------------------------------- node

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
    if "test" in scripts and str(scripts["test"]).strip() != _NPM_DEFAULT_TEST:
        test.append(_in_dir(root, f"{manager} test"))
        reasons.append("tests: the package.json test script")
    else:
        reasons.append("no test script in package.json: no test command")
    src = _existing_dirs(d, root, ("src", "lib", "app", "pages", "components", "test",
                                   "tests", "__tests__"))
    return Toolchain(name="node", manager=manager, install=[_in_dir(root, install)], build=build,
                     test=test, reasons=reasons, source_dirs=src or [root], root=root)


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
                     reasons=reasons, source_dirs=sorted(set(src)) or [root], root=root)


def _detect_go(d: Path, root: str) -> Toolchain | None:
    if not (d / "go.mod").is_file():
        return None
    reasons = [f"Go: found go.mod in {root}", "go build ./... and go test ./... cover every package"]
    src = _existing_dirs(d, root, ("cmd", "pkg", "internal"))
    return Toolchain(name="go", manager="go", install=[_in_dir(root, "go mod download")],
                     build=[_in_dir(root, "go build ./...")], test=[_in_dir(root, "go test ./...")],
                     reasons=reasons, source_dirs=src or [root], root=root)


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
                         reasons=reasons, source_dirs=src, root=root)
    gradle_files = [n for n in ("build.gradle", "build.gradle.kts") if (d / n).is_file()]
    if gradle_files:
        wrapper = (d / "gradlew").is_file()
        gradle = "./gradlew" if wrapper else "gradle"
        reasons = [f"Java: found {gradle_files[0]} in {root}",
                   "Gradle wrapper ./gradlew present" if wrapper else "no ./gradlew: system gradle"]
        return Toolchain(name="java", manager="gradle", install=[],
                         build=[_in_dir(root, f"{gradle} assemble")],
                         test=[_in_dir(root, f"{gradle} test")],
                         reasons=reasons, source_dirs=src, root=root)
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
                     reasons=reasons, source_dirs=_existing_dirs(d, root, ("src", "tests", "test"))
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
                      if e.is_dir() and not e.name.startswith(".") and e.name not in _SKIP_DIRS)
    except OSError:
        return []
    dirs += [(repo / s, s) for s in subs]
    for d, root in dirs:
        for detect in _DETECTORS:
            tc = detect(d, root)
            if tc is not None:
                found.append(tc)
    return found


def default_checks(repo: Path) -> tuple[list[str], list[str]]:
    """The check commands a phase runs when it lists none, and why.

    Per directory: the language toolchains' build (Node, Go: tests do not
    imply a build) and test commands; a Makefile's test target is used only
    where no language toolchain in the same directory has a test command.
    Returns ``(checks, reasons)``; ``([], [reason])`` when nothing is found.
    """
    toolchains = detect_toolchains(repo)
    checks: list[str] = []
    reasons: list[str] = []
    roots_with_tests = {tc.root for tc in toolchains if tc.name != "make" and tc.test}
    for tc in toolchains:
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
    return checks, reasons


def python_env_commands(tc: Toolchain, venv: Path, *, python: str = "python3") -> list[list[str]]:
    """Argv lists that create and fill the run's own virtualenv at ``venv``.

    Run them in order from the worktree root (no shell). ``venv`` should be
    an absolute path inside the worktree. Afterwards run every check with
    :func:`venv_environ` so the venv's ``bin`` comes first on ``PATH``.
    Returns ``[]`` for a toolchain that needs no venv.
    """
    if tc.env != "venv":
        return []
    vpy = str(venv / "bin" / "python")
    where = [] if tc.root == "." else ["--directory", tc.root]
    if tc.manager == "uv":
        # uv creates the venv itself and installs exactly what uv.lock pins.
        return [["env", f"UV_PROJECT_ENVIRONMENT={venv}", "uv", "sync", "--frozen",
                 "--all-extras", *where]]
    cmds: list[list[str]] = [[python, "-m", "venv", str(venv)]]
    if tc.manager == "poetry":
        # poetry installs into the active virtualenv named by VIRTUAL_ENV.
        cmds.append(["env", f"VIRTUAL_ENV={venv}", "poetry", "install", "--no-interaction",
                     *where])
        return cmds
    for cmd in tc.install:
        # "cd sub && python -m pip install -e '.[test]'" → [vpy, -m, pip, install, -e, sub[test]]
        args = shlex.split(cmd.split(" && ")[-1])[1:]
        for i in range(1, len(args)):
            if args[i - 1] in ("-e", "-r") and tc.root != ".":
                path, bracket, extras = args[i].partition("[")
                args[i] = os.path.normpath(os.path.join(tc.root, path)) + bracket + extras
        cmds.append([vpy, *args])
    return cmds


def venv_environ(venv: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with the run's venv activated: its bin first on PATH, VIRTUAL_ENV set."""
    env = dict(environ)
    env.pop("PYTHONHOME", None)
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *filter(None, [environ.get("PATH")])])
    return env


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

"""Toolchain detection on small real repositories (git init, real files)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from autopack.actors._toolchain import (
    Toolchain,
    default_checks,
    detect_toolchains,
    python_env_commands,
    repo_modules,
    venv_environ,
)


def make_repo(root: Path, files: dict[str, str]) -> Path:
    """A real git repository with ``files`` committed."""
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(root), "commit", "-qm", "init"], check=True, env=env)
    return root


PY_PIP = {
    "pyproject.toml": """\
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "calc"
        version = "0.1"
        [project.optional-dependencies]
        test = ["pytest"]
        """,
    "src/calc/__init__.py": "def add(a, b):\n    return a + b\n",
    "tests/test_calc.py": "from calc import add\n\ndef test_add():\n    assert add(1, 2) == 3\n",
}

CASES = [
    pytest.param(PY_PIP, [("python", "pip", ".")],
                 {"test": ["python -m pytest -q"], "install": ["python -m pip install -e '.[test]'"],
                  "source_dirs": ["src", "tests"], "env": "venv"}, id="python-pip-pyproject"),
    pytest.param({"requirements.txt": "requests\n", "app.py": "print(1)\n"},
                 [("python", "pip", ".")],
                 {"test": ["python -m unittest"],
                  "install": ["python -m pip install -r requirements.txt"]},
                 id="python-requirements-unittest"),
    pytest.param({"pyproject.toml": "[project]\nname='x'\nversion='1'\n", "uv.lock": "version = 1\n",
                  "x/__init__.py": "", "tests/test_x.py": "def test_x():\n    pass\n"},
                 [("python", "uv", ".")],
                 {"install": ["uv sync --frozen --all-extras"], "test": ["python -m pytest -q"],
                  "source_dirs": ["x", "tests"]}, id="python-uv"),
    pytest.param({"pyproject.toml": "[tool.poetry]\nname='p'\nversion='1'\n", "p/__init__.py": ""},
                 [("python", "poetry", ".")],
                 {"install": ["poetry install --no-interaction"], "test": ["python -m unittest"]},
                 id="python-poetry-tool-table"),
    pytest.param({"pyproject.toml": "[project]\nname='p'\nversion='1'\n", "poetry.lock": "",
                  "pytest.ini": "[pytest]\n"},
                 [("python", "poetry", ".")], {"test": ["python -m pytest -q"]},
                 id="python-poetry-lock-pytest-ini"),
    pytest.param({"setup.py": "from setuptools import setup\nsetup(name='s')\n",
                  "setup.cfg": "[tool:pytest]\ntestpaths = t\n"},
                 [("python", "pip", ".")],
                 {"test": ["python -m pytest -q"],
                  "install": ["python -m pip install -e '.'", "python -m pip install pytest"]},
                 id="python-setup-py-cfg"),
    pytest.param({"package.json": '{"scripts": {"test": "jest", "build": "tsc"}}',
                  "package-lock.json": "{}", "src/index.ts": ""},
                 [("node", "npm", ".")],
                 {"install": ["npm ci"], "build": ["npm run build"], "test": ["npm test"],
                  "source_dirs": ["src"]}, id="node-npm"),
    pytest.param({"package.json": '{"scripts": {"test": "vitest"}}', "yarn.lock": ""},
                 [("node", "yarn", ".")],
                 {"install": ["yarn install --frozen-lockfile"], "test": ["yarn test"]},
                 id="node-yarn"),
    pytest.param({"package.json": '{"scripts": {"build": "vite build"}}', "pnpm-lock.yaml": ""},
                 [("node", "pnpm", ".")],
                 {"install": ["pnpm install --frozen-lockfile"], "build": ["pnpm build"],
                  "test": []}, id="node-pnpm-no-test"),
    pytest.param({"package.json": '{"scripts": {"test": "echo \\"Error: no test specified\\" '
                                  '&& exit 1"}}'},
                 [("node", "npm", ".")], {"install": ["npm install"], "test": []},
                 id="node-default-test-script-ignored"),
    pytest.param({"Cargo.toml": "[package]\nname='r'\nversion='0.1.0'\n", "src/main.rs": ""},
                 [("rust", "cargo", ".")],
                 {"build": ["cargo build"], "test": ["cargo test"], "source_dirs": ["src"]},
                 id="rust"),
    pytest.param({"go.mod": "module example.org/g\n\ngo 1.21\n", "main.go": "package main\n"},
                 [("go", "go", ".")],
                 {"test": ["go test ./..."], "build": ["go build ./..."], "source_dirs": ["."]},
                 id="go"),
    pytest.param({"pom.xml": "<project/>", "src/main/java/A.java": ""},
                 [("java", "mvn", ".")], {"test": ["mvn -B -q test"]}, id="java-maven"),
    pytest.param({"build.gradle.kts": "", "gradlew": "#!/bin/sh\n"},
                 [("java", "gradle", ".")], {"test": ["./gradlew test"]}, id="java-gradle-wrapper"),
    pytest.param({"build.gradle": ""}, [("java", "gradle", ".")], {"test": ["gradle test"]},
                 id="java-gradle-system"),
    pytest.param({"Makefile": "all:\n\tcc -o x x.c\ncheck:\n\t./x\n"}, [("make", "make", ".")],
                 {"test": ["make check"], "build": ["make"]}, id="make-check"),
    pytest.param({"Makefile": "CC := gcc\nbuild:\n\ttrue\n"}, [("make", "make", ".")],
                 {"test": [], "build": ["make build"]}, id="make-no-test"),
    pytest.param({"backend/pyproject.toml": "[project]\nname='b'\nversion='1'\n",
                  "backend/tests/test_b.py": "def test_b():\n    pass\n",
                  "frontend/package.json": '{"scripts": {"test": "jest"}}',
                  "frontend/yarn.lock": "", "Makefile": "test:\n\ttrue\n"},
                 [("make", "make", "."), ("python", "pip", "backend"), ("node", "yarn", "frontend")],
                 {}, id="monorepo-subdirs"),
    pytest.param({"README.md": "hello\n"}, [], {}, id="nothing"),
    pytest.param({"node_modules/x/package.json": "{}", "README.md": ""}, [], {},
                 id="node-modules-ignored"),
]


@pytest.mark.parametrize(("files", "expected", "fields"), CASES)
def test_detect(tmp_path: Path, files: dict[str, str], expected: list[tuple[str, str, str]],
                fields: dict[str, object]) -> None:
    repo = make_repo(tmp_path / "r", files)
    found = detect_toolchains(repo)
    assert [(t.name, t.manager, t.root) for t in found] == expected
    for key, want in fields.items():
        assert getattr(found[0], key) == want, key
    for tc in found:
        assert tc.reasons
        assert all(isinstance(r, str) and r for r in tc.reasons)


def test_subdir_commands_cd_into_their_dir(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"frontend/package.json": '{"scripts": {"test": "jest"}}'})
    (tc,) = detect_toolchains(repo)
    assert tc.test == ["cd frontend && npm test"]
    assert tc.install == ["cd frontend && npm install"]


@pytest.mark.parametrize(("files", "checks"), [
    pytest.param({"Makefile": "test:\n\ttrue\n", "requirements.txt": "",
                  "tests/test_a.py": ""}, ["python -m pytest -q"], id="python-beats-make"),
    pytest.param({"Makefile": "test:\n\ttrue\n"}, ["make test"], id="make-alone"),
    pytest.param({"go.mod": "module m\n"}, ["go build ./...", "go test ./..."], id="go-build-test"),
    pytest.param({"README": ""}, [], id="none"),
])
def test_default_checks(tmp_path: Path, files: dict[str, str], checks: list[str]) -> None:
    repo = make_repo(tmp_path / "r", files)
    got, reasons = default_checks(repo)
    assert got == checks
    assert reasons


@pytest.mark.parametrize(("files", "modules"), [
    pytest.param(PY_PIP, ["calc"], id="src-layout"),
    pytest.param({"pkg/__init__.py": "", "tool.py": "", "setup.py": "", "docs/x.txt": "",
                  "requirements.txt": ""}, ["pkg", "tool"], id="flat"),
    pytest.param({"pyproject.toml": "[project]\nname='my-dist'\nversion='1'\n"
                  "[tool.setuptools]\npackages=['mylib.core']\n"}, ["my_dist", "mylib"],
                 id="declared"),
    pytest.param({"backend/pyproject.toml": "[project]\nname='b'\nversion='1'\n",
                  "backend/src/api/main.py": ""}, ["api", "b"], id="subdir-namespace-src"),
])
def test_repo_modules(tmp_path: Path, files: dict[str, str], modules: list[str]) -> None:
    assert repo_modules(make_repo(tmp_path / "r", files)) == modules


def test_env_commands_shapes(tmp_path: Path) -> None:
    venv = tmp_path / "wt" / ".venv"
    uv = Toolchain(name="python", manager="uv", install=[], build=[], test=[], reasons=[],
                   source_dirs=[], env="venv", root="svc")
    assert python_env_commands(uv, venv) == [
        ["env", f"UV_PROJECT_ENVIRONMENT={venv}", "uv", "sync", "--frozen", "--all-extras",
         "--directory", "svc"]]
    pip = Toolchain(name="python", manager="pip",
                    install=["cd svc && python -m pip install -e '.[test]'",
                             "cd svc && python -m pip install -r requirements.txt"],
                    build=[], test=[], reasons=[], source_dirs=[], env="venv", root="svc")
    vpy = str(venv / "bin" / "python")
    assert python_env_commands(pip, venv) == [
        ["python3", "-m", "venv", str(venv)],
        [vpy, "-m", "pip", "install", "-e", "svc[test]"],
        [vpy, "-m", "pip", "install", "-r", "svc/requirements.txt"]]
    node = Toolchain(name="node", manager="npm", install=[], build=[], test=[], reasons=[],
                     source_dirs=[])
    assert python_env_commands(node, venv) == []
    env = venv_environ(venv, {"PATH": "/usr/bin", "PYTHONHOME": "/x"})
    assert env == {"PATH": f"{venv}/bin{os.pathsep}/usr/bin", "VIRTUAL_ENV": str(venv)}


def _run(cmd: str | list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, shell=isinstance(cmd, str), text=True,
                          capture_output=True, timeout=120)


def test_python_pip_detected_commands_really_work(tmp_path: Path) -> None:
    """Create the per-worktree venv as the run actor would, then run the detected test.

    Offline: the venv is made with ``--system-site-packages`` so the
    ``pip install pytest`` step finds pytest already satisfied, and pip is
    told not to use an index.
    """
    repo = make_repo(tmp_path / "r", {
        "requirements.txt": "",
        "calc.py": "def add(a, b):\n    return a + b\n",
        "tests/test_calc.py": "from calc import add\n\ndef test_add():\n    assert add(2, 2) == 4\n",
    })
    (tc,) = detect_toolchains(repo)
    venv = repo / ".venv"
    cmds = python_env_commands(tc, venv, python=sys.executable)
    assert cmds[0] == [sys.executable, "-m", "venv", str(venv)]
    # Offline: see the packages of this interpreter (pytest) from the run's venv.
    cmds[0] = [*cmds[0][:3], "--system-site-packages", *cmds[0][3:]]
    env = venv_environ(venv, os.environ)
    env["PIP_NO_INDEX"] = "1"
    for argv in cmds:
        done = _run(argv, repo, env)
        assert done.returncode == 0, done.stderr
    (check,) = tc.test
    done = _run(check, repo, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    # And the check fails when the code is wrong: the command really tests something.
    (repo / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    assert _run(check, repo, env).returncode == 1


def test_make_detected_test_really_runs(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {
        "Makefile": "test:\n\tsh ./check.sh\n",
        "check.sh": "grep -qx ok status.txt\n",
        "status.txt": "ok\n",
    })
    checks, _ = default_checks(repo)
    assert checks == ["make test"]
    assert _run(checks[0], repo, dict(os.environ)).returncode == 0
    (repo / "status.txt").write_text("broken\n")
    assert _run(checks[0], repo, dict(os.environ)).returncode != 0

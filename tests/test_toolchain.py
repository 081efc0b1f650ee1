"""Toolchain detection on small real repositories (git init, real files)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from autopack.actors._toolchain import (
    default_checks,
    detect,
    detect_toolchains,
    repo_modules,
)

PYTEST = "python -m pytest -q"


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
                 {"test": [PYTEST], "install": ["python -m pip install -e '.[test]'"],
                  "source_dirs": ["src", "tests"], "env": "venv", "runner": "pytest",
                  "install_inputs": ["pyproject.toml"]}, id="python-pip-pyproject"),
    pytest.param({"requirements.txt": "requests\n", "app.py": "print(1)\n"},
                 [("python", "pip", ".")],
                 {"test": [], "runner": None,
                  "install": ["python -m pip install -r requirements.txt"]},
                 id="python-requirements-no-tests-no-command"),
    pytest.param({"requirements.txt": "", "tests.py": "import unittest\n"
                  "class T(unittest.TestCase):\n    def test_a(self):\n        pass\n"},
                 [("python", "pip", ".")],
                 {"test": ["python -m unittest discover -p 'test*.py'"], "runner": "unittest"},
                 id="python-unittest-only-where-pytest-finds-nothing"),
    pytest.param({"setup.py": "from setuptools import setup\nsetup(name='u')\n",
                  "u/__init__.py": "", "tests/test_u.py": "import unittest\n"
                  "class T(unittest.TestCase):\n    def test_a(self):\n        pass\n"},
                 [("python", "pip", ".")],
                 {"test": [PYTEST], "runner": "pytest",
                  "install": ["python -m pip install -e '.'", "python -m pip install pytest"]},
                 id="python-unittest-suite-runs-under-pytest"),
    pytest.param({"pyproject.toml": "[project]\nname='h'\nversion='1'\n",
                  "h/__init__.py": "", "h/tests/__init__.py": "",
                  "h/tests/test_h.py": "def test_h():\n    assert True\n",
                  "docs/requirements.txt": "sphinx\n", "docs/conf.py": ""},
                 [("python", "pip", ".")],
                 {"test": [PYTEST], "runner": "pytest"},
                 id="tests-inside-package-no-config-docs-not-a-project"),
    pytest.param({"calc.py": "X = 1\n", "test_calc.py": "class TestX:\n"
                  "    def test_x(self):\n        assert True\n"},
                 [("python", "pip", ".")], {"test": [PYTEST], "install": [
                     "python -m pip install pytest"]}, id="bare-test-files-no-markers"),
    pytest.param({"setup.py": "", "tests/test_nothing.py": "# no tests yet\nX = 1\n"},
                 [("python", "pip", ".")], {"test": []}, id="test-file-without-tests"),
    pytest.param({"setup.py": "", "tox.ini": "[testenv]\nextras =\n    tests: tests\n"
                  "    docs: docs\ndeps = -r test-requirements.txt\ncommands = pytest {posargs}\n",
                  "test-requirements.txt": "hypothesis\n", "requirements-docs.txt": "sphinx\n",
                  "setup.cfg": "[options.extras_require]\ntests = pytest\ndocs = sphinx\n"},
                 [("python", "pip", ".")],
                 {"test": [PYTEST], "install": ["python -m pip install -e '.[tests]'",
                                                "python -m pip install -r test-requirements.txt"]},
                 id="tox-hints-extras-and-requirements"),
    pytest.param({"pyproject.toml": "[project]\nname='x'\nversion='1'\n", "uv.lock": "version = 1\n",
                  "x/__init__.py": "", "tests/test_x.py": "def test_x():\n    pass\n"},
                 [("python", "uv", ".")],
                 {"install": ["uv sync --locked --all-extras", "python -m pip install pytest"],
                  "test": [PYTEST], "source_dirs": ["x", "tests"]}, id="python-uv"),
    pytest.param({"pyproject.toml": "[project]\nname='x'\nversion='1'\n[dependency-groups]\n"
                  "dev = ['ruff']\ntests = ['pytest>=8']\ndocs = ['sphinx']\n",
                  "uv.lock": "version = 1\n", "tests/test_x.py": "def test_x():\n    pass\n"},
                 [("python", "uv", ".")],
                 {"install": ["uv sync --locked --all-extras --group tests"], "test": [PYTEST]},
                 id="python-uv-test-group"),
    pytest.param({"pyproject.toml": "[project]\nname='x'\nversion='1'\n[tool.uv]\n"
                  "package = true\n", "tests/test_x.py": "def test_x():\n    pass\n"},
                 [("python", "pip", ".")],
                 {"install": ["python -m pip install -e '.'", "python -m pip install pytest"]},
                 id="python-tool-uv-without-lock-is-pip"),
    pytest.param({"pyproject.toml": "[tool.poetry]\nname='p'\nversion='1'\n"
                  "[tool.poetry.group.test]\noptional = true\n"
                  "[tool.poetry.group.test.dependencies]\npytest = '^8'\n"
                  "[tool.poetry.group.lint.dependencies]\nruff = '*'\n",
                  "poetry.lock": "", "tests/test_p.py": "def test_p():\n    pass\n"},
                 [("python", "poetry", ".")],
                 {"install": ["poetry install --no-interaction --all-extras --with test"],
                  "test": [PYTEST]}, id="python-poetry-optional-test-group"),
    pytest.param({"pyproject.toml": "[tool.poetry]\nname='p'\nversion='1'\n", "p/__init__.py": ""},
                 [("python", "poetry", ".")],
                 {"install": ["poetry install --no-interaction --all-extras"], "test": []},
                 id="python-poetry-tool-table"),
    pytest.param({"pyproject.toml": "[project]\nname='p'\nversion='1'\n", "poetry.lock": "",
                  "pytest.ini": "[pytest]\n"},
                 [("python", "poetry", ".")], {"test": [PYTEST]},
                 id="python-poetry-lock-pytest-ini"),
    pytest.param({"setup.py": "from setuptools import setup\nsetup(name='s')\n",
                  "setup.cfg": "[tool:pytest]\ntestpaths = t\n"},
                 [("python", "pip", ".")],
                 {"test": [PYTEST],
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
    pytest.param({"package.json": '{"scripts": {"test": "echo \'Error: no test specified\' '
                                  '; exit 1"}}'},
                 [("node", "npm", ".")], {"test": []}, id="node-placeholder-other-quoting"),
    pytest.param({"package.json": '{"scripts": {"test": "node --test"}}', "README.md": "",
                  "docs/package.json": '{"scripts": {"test": "jest"}}',
                  "examples/demo/package.json": "{}"},
                 [("node", "npm", ".")], {"test": ["npm test"], "runner": "npm"},
                 id="node-docs-and-examples-not-projects"),
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
                  "scripts/requirements.txt": "requests\n",
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
                  "tests/test_a.py": "def test_a():\n    pass\n"}, [PYTEST],
                 id="python-beats-make"),
    pytest.param({"Makefile": "test:\n\tpython -m pytest\n", "setup.py": ""}, [PYTEST],
                 id="makefile-hint-pytest-no-test-files-yet"),
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


def test_detection_lists_install_steps_and_inputs(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {**PY_PIP, "web/package.json":
                                      '{"scripts": {"test": "node --test"}}',
                                      "web/package-lock.json": "{}"})
    d = detect(repo)
    assert d.install == ["python -m pip install -e '.[test]'", "cd web && npm ci"]
    assert d.checks == [PYTEST, "cd web && npm test"]
    assert d.env == "venv"
    assert d.install_inputs == ["pyproject.toml", "web/package.json", "web/package-lock.json"]


def test_detect_cli(tmp_path: Path) -> None:
    import json

    repo = make_repo(tmp_path / "r", PY_PIP)
    ctl = Path(sys.executable).parent / "autopackctl"
    done = subprocess.run([ctl, "detect", str(repo), "--json"], capture_output=True, text=True,
                          check=True)
    out = json.loads(done.stdout)
    assert out["checks"] == [PYTEST]
    assert out["install"] == ["python -m pip install -e '.[test]'"]
    assert out["toolchains"][0]["runner"] == "pytest"
    human = subprocess.run([ctl, "detect", str(repo)], capture_output=True, text=True)
    assert human.returncode == 0
    assert "tests: pytest — 1 test file(s) pytest collects (tests/test_calc.py)" in human.stdout
    empty = make_repo(tmp_path / "e", {"README.md": ""})
    none = subprocess.run([ctl, "detect", str(empty)], capture_output=True, text=True)
    assert none.returncode == 1
    assert "such a phase would fail" in none.stdout
    bad = subprocess.run([ctl, "detect", str(tmp_path / "missing")], capture_output=True,
                         text=True)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr


def _run(cmd: str | list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, shell=isinstance(cmd, str), text=True,
                          capture_output=True, timeout=120)


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

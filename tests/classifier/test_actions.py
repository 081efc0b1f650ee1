"""Mitigation actions for real: a plain venv, a local wheel, pip with --no-index."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest
from autopack.actors.classifier import apply_mitigation, classify, undeclared_dependency
from autopack.protocol import Classification, Mitigation

pytestmark = pytest.mark.slow


async def _wheel(tmp: Path) -> Path:
    src = tmp / "src" / "tinymod_ap"
    src.mkdir(parents=True)
    (src / "tinymod_ap").mkdir()
    (src / "tinymod_ap" / "__init__.py").write_text("VALUE = 42\n")
    (src / "setup.py").write_text("from setuptools import setup\nsetup(name='tinymod-ap', version='1.0', packages=['tinymod_ap'])\n")
    wheels = tmp / "wheels"
    await anyio.run_process([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                             "-w", str(wheels), str(src)])
    return wheels


async def test_missing_module_installed_into_run_venv_then_check_passes(tmp_path: Path) -> None:
    with anyio.fail_after(240):
        await _install_from_wheel_then_check(tmp_path)


async def _install_from_wheel_then_check(tmp_path: Path) -> None:
    wheels = await _wheel(tmp_path)
    venv = tmp_path / "venv"
    await anyio.run_process([sys.executable, "-m", "venv", str(venv)])  # plain, isolated
    python = venv / "bin" / "python"
    worktree = tmp_path / "wt"
    worktree.mkdir()
    (worktree / "requirements.txt").write_text("requests\n")
    check = [str(python), "-c", "import tinymod_ap; assert tinymod_ap.VALUE == 42"]

    first = await anyio.run_process(check, cwd=worktree, check=False)
    assert first.returncode != 0
    c = classify(first.stdout + first.stderr, first.returncode)
    assert c.pattern == "python_missing_dep"
    assert c.mitigation is not None
    assert c.mitigation.package == "tinymod-ap"

    env = {"PATH": "/usr/bin:/bin", "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    done = await apply_mitigation(c, worktree=worktree, python=python, env=env,
                                  allowed={"python_missing_dep"}, already=set())
    assert done.acted, done.output
    assert done.ok, done.output
    assert done.undeclared == "tinymod-ap"
    assert done.key
    assert (await anyio.run_process(check, cwd=worktree, check=False)).returncode == 0
    # not into the interpreter running the tests
    assert (await anyio.run_process([sys.executable, "-c", "import tinymod_ap"], check=False)).returncode != 0

    again = await apply_mitigation(c, worktree=worktree, python=python, env=env,
                                   allowed={"python_missing_dep"}, already={done.key})
    assert not again.acted


async def test_refusals_without_running_anything(tmp_path: Path) -> None:
    c = classify("ModuleNotFoundError: No module named 'yaml'\n", 1)
    out = await apply_mitigation(c, worktree=tmp_path, python=Path(sys.executable), env={},
                                 allowed=set(), already=set())
    assert not out.acted
    assert "auto_mitigate" in out.summary
    out = await apply_mitigation(c, worktree=tmp_path, python=Path("/usr/bin/python3"), env={},
                                 allowed={"python_missing_dep"}, already=set())
    assert not out.acted  # not a venv interpreter
    bad = Classification(pattern="python_missing_dep", mitigation=Mitigation(
        kind="install_dependency", summary="x", package="--index-url=http://evil", manager="pip"))
    out = await apply_mitigation(bad, worktree=tmp_path, python=Path(sys.executable), env={},
                                 allowed={"python_missing_dep"}, already=set())
    assert not out.acted
    assert "suspicious" in out.summary
    node = classify("Error: Cannot find module 'lodash'\n", 1)
    out = await apply_mitigation(node, worktree=tmp_path, python=None, env={},
                                 allowed={"node_missing_dep"}, already=set())
    assert not out.acted
    assert "package.json" in out.summary


async def test_wait_is_capped(tmp_path: Path) -> None:
    c = classify("HTTP/1.1 429 Too Many Requests\nretry-after: 3600\n", 22)
    out = await apply_mitigation(c, worktree=tmp_path, python=None, env={}, allowed={"rate_limited"},
                                 already=set(), max_wait_s=0.01)
    assert out.acted
    assert out.ok
    assert "0.01" in out.summary


def test_undeclared_dependency(tmp_path: Path) -> None:
    assert undeclared_dependency(tmp_path, "PyYAML")  # no manifest at all
    (tmp_path / "pyproject.toml").write_text('[project]\nname="x"\ndependencies=["pyyaml>=6", "Scikit_Learn"]\n')
    assert not undeclared_dependency(tmp_path, "PyYAML")
    assert not undeclared_dependency(tmp_path, "scikit-learn")
    assert undeclared_dependency(tmp_path, "requests")
    (tmp_path / "package.json").write_text('{"devDependencies": {"lodash": "^4"}}')
    assert not undeclared_dependency(tmp_path, "lodash")

"""The install plan and the ready-environment cache, on real virtualenvs (no daemon)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from autopack.actors._env import system_python
from autopack.actors._install import EnvCache, cache_key, plan_install, uv_binary, venv_command
from autopack.actors._toolchain import detect

from tests.conftest import make_repo, require_system


def test_plan_detected_spec_and_uv_translation(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {
        "setup.py": "", "tests/test_a.py": "def test_a():\n    pass\n",
        "web/package.json": '{"scripts": {"test": "node --test"}}',
        "web/package-lock.json": "{}"})
    d = detect(repo)
    pip = plan_install(d, None, uv=None)
    assert pip.venv_steps == ["python -m pip install -e '.'", "python -m pip install pytest"]
    assert pip.steps == ["cd web && npm ci"]  # always run: node_modules lives in the worktree
    assert pip.source == "detected"
    assert pip.installer == "pip"
    uv = plan_install(d, None, uv="/opt/uv bin/uv")
    assert uv.venv_steps == ["'/opt/uv bin/uv' pip install -e '.'",
                             "'/opt/uv bin/uv' pip install pytest"]
    spec = plan_install(d, ["make deps"], uv=None)
    assert spec.venv_steps == []
    assert spec.steps == ["make deps"]
    assert spec.source == "spec"
    assert spec.venv is True
    none = plan_install(detect(make_repo(tmp_path / "n", {"README": ""})), None, uv=None)
    assert (none.venv, none.steps, none.venv_steps, none.source) == (False, [], [], "none")


def test_cache_key_follows_install_inputs_only(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"setup.py": "# v1\n", "requirements.txt": "x\n",
                                      "app.py": "A = 1\n"})
    plan = plan_install(detect(repo), None, uv=None)
    k1 = cache_key(repo, plan, sys.executable)
    (repo / "app.py").write_text("A = 2\n")  # the code: same key (installed editable)
    assert cache_key(repo, plan, sys.executable) == k1
    (repo / "requirements.txt").write_text("y\n")
    assert cache_key(repo, plan, sys.executable) != k1


def _venv(path: Path) -> Path:
    subprocess.run(venv_command(path, system_python(), uv_binary()), check=True,
                   capture_output=True)
    script = path / "bin" / "hello"
    script.write_text(f"#!{path}/bin/python\nprint('hi')\n")
    script.chmod(0o755)
    site = next(path.glob("lib/python*/site-packages"))
    (site / "__editable__.proj.pth").write_text("/work/old-worktree/src\n")
    return path


def test_clone_rewrites_paths_and_a_written_entry_is_dropped(tmp_path: Path) -> None:
    cache = EnvCache(tmp_path / "envcache")
    built = _venv(tmp_path / "envs" / "run1")
    assert cache.store("k", built, Path("/work/old-worktree"))
    clone = tmp_path / "envs" / "run2"
    assert cache.clone("k", clone, Path("/work/new-worktree"))
    assert (clone / "bin" / "hello").read_text().startswith(f"#!{clone}/bin/python\n")
    site = next(clone.glob("lib/python*/site-packages"))
    assert (site / "__editable__.proj.pth").read_text() == "/work/new-worktree/src\n"
    done = subprocess.run([clone / "bin" / "python", "-c", "import sys; print(sys.prefix)"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(clone)
    # the entry itself still holds the builder's paths, and is read-only
    entry_pth = next((tmp_path / "envcache" / "k").glob("lib/python*/site-packages")) / \
        "__editable__.proj.pth"
    assert entry_pth.read_text() == "/work/old-worktree/src\n"
    assert not os.stat(entry_pth).st_mode & 0o222
    # a file written in place through a run's hardlink: the entry is not reused again
    victim = next(p for p in site.rglob("*.py") if os.stat(p).st_nlink > 1)
    os.chmod(victim, 0o644)
    with open(victim, "a") as fh:
        fh.write("# tampered\n")
    assert not cache.clone("k", tmp_path / "envs" / "run3", Path("/work/w3"))
    assert not cache.has("k")


@pytest.mark.parametrize("n", [3])
def test_prune_keeps_the_most_recent(tmp_path: Path, n: int) -> None:
    cache = EnvCache(tmp_path / "envcache", keep=n)
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "pyvenv.cfg").write_text("home = /usr/bin\n")
    for i in range(n + 2):
        assert cache.store(f"k{i}", src, tmp_path)
        os.utime(cache.root / f"k{i}", (i + 1000, i + 1000))
    cache.store("last", src, tmp_path)
    assert cache.has("last")
    assert len([p for p in cache.root.iterdir()]) == n


def test_node_install_keyed_by_package_json_lockfile_and_cloned_as_is(tmp_path: Path) -> None:

    from autopack.actors._install import node_cache_key

    require_system("node", "nodejs")
    require_system("npm", "npm")
    repo = make_repo(tmp_path / "r", {"web/package.json": '{"name": "w"}',
                                      "web/package-lock.json": "{}", "web/app.js": "1\n"})
    node = plan_install(detect(repo), None, uv=None).node
    assert node is not None
    assert (node.step, node.manager, node.modules) == ("cd web && npm ci", "npm",
                                                       "web/node_modules")
    assert sorted(node.inputs) == ["web/package-lock.json", "web/package.json"]
    env = dict(os.environ)
    k1 = node_cache_key(repo, node, env)
    assert k1 is not None
    (repo / "web/app.js").write_text("2\n")  # the code: same key
    assert node_cache_key(repo, node, env) == k1
    (repo / "web/package-lock.json").write_text('{"v": 2}')
    assert node_cache_key(repo, node, env) != k1
    assert plan_install(detect(repo), ["make deps"], uv=None).node is None  # spec's setup
    # a node_modules (relative symlinks in .bin) is cloned as is, the tamper check holds
    mods = repo / "web/node_modules"
    (mods / "dep").mkdir(parents=True)
    (mods / "dep/index.js").write_text("module.exports = 1;\n")
    (mods / ".bin").mkdir()
    (mods / ".bin/dep").symlink_to("../dep/index.js")
    cache = EnvCache(tmp_path / "envcache")
    assert cache.store("n", mods, repo)
    other = tmp_path / "w2/web/node_modules"
    assert cache.clone("n", other, tmp_path / "w2", rewrite=False)
    assert (other / ".bin/dep").read_text() == "module.exports = 1;\n"
    assert os.stat(other / "dep/index.js").st_nlink > 1
    assert not (other / "autopack-env.json").exists()
    os.chmod(other / "dep/index.js", 0o644)
    with open(other / "dep/index.js", "a") as fh:
        fh.write("// tampered\n")
    assert not cache.clone("n", tmp_path / "w3/node_modules", tmp_path / "w3", rewrite=False)
    assert not cache.has("n")


def test_lockfile_plans_name_uv_and_poetry_by_path(tmp_path: Path) -> None:
    from autopack.actors._install import install_env

    uv_repo = make_repo(tmp_path / "u", {
        "pyproject.toml": "[project]\nname='u'\nversion='1'\n[dependency-groups]\n"
                          "test = ['pytest']\n", "uv.lock": "version = 1\n"})
    plan = plan_install(detect(uv_repo), None, uv="/opt/uv", poetry=None)
    # --locked: a lock out of date with pyproject.toml is refused (--frozen would install it)
    assert plan.venv_steps == ["/opt/uv sync --locked --all-extras --group test"]
    assert "uv.lock" in plan.inputs
    poetry_repo = make_repo(tmp_path / "p", {
        "pyproject.toml": "[tool.poetry]\nname='p'\nversion='1'\n", "poetry.lock": "",
        "tests/test_p.py": "def test_p():\n    pass\n"})
    plan = plan_install(detect(poetry_repo), None, uv=None, poetry="/opt/my tools/poetry")
    assert plan.venv_steps == ["'/opt/my tools/poetry' install --no-interaction --all-extras",
                               "python -m pip install pytest"]  # pytest not declared
    assert plan.inputs == ["pyproject.toml", "poetry.lock"]
    missing = plan_install(detect(poetry_repo), None, uv=None, poetry=None)
    assert missing.venv_steps[0].startswith("poetry install")  # fails as a missing command
    env = install_env({"PATH": "/bin"}, tmp_path / "venv", tmp_path / "state")
    assert env["POETRY_CACHE_DIR"] == str(tmp_path / "state" / "cache" / "poetry")
    assert env["POETRY_VIRTUALENVS_CREATE"] == "false"
    assert env["UV_PROJECT_ENVIRONMENT"] == str(tmp_path / "venv")

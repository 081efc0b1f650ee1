"""Detected tests through the real daemon: the right runner, real failures, zero tests fail.

Every repository here is a real project built in the test (git init, real
files); phases are ``kind = "command"`` (no LLM). Runs install only from a
local wheelhouse (no network): see ``tests/_wheels.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests._wheels import build_wheelhouse, offline_env
from tests.conftest import event_payloads as events
from tests.conftest import make_repo, require_system, wait_state
from tests.conftest import submit_phase as submit

PYTEST = "python -m pytest -q"
SETUP_PY = "from setuptools import setup\nsetup(name='calc', version='1.0', packages=['calc'])\n"
CALC = {"setup.py": SETUP_PY, "calc/__init__.py": "def add(a, b):\n    return a + b\n"}
PYTEST_STYLE = {  # no pytest configuration anywhere, pytest not declared
    **CALC,
    "tests/test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n\n\n"
                          "class TestMore:\n    def test_zero(self):\n        assert add(0, 0) == 0\n",
}


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheelhouse(tmp_path_factory.mktemp("wheels"))


@pytest.fixture
def offline_daemon(daemon_factory: Any, wheelhouse: Path) -> Any:
    # the wheelhouse sits in the host's /tmp: the operator lets sandboxes read it
    return daemon_factory(env={**offline_env(wheelhouse), "ANTHROPIC_API_KEY": ""},
                          config={"sandbox_read_only": [str(wheelhouse)]})


def test_pytest_style_tests_without_config_run_under_pytest(offline_daemon: Any,
                                                           tmp_path: Path) -> None:
    d = offline_daemon
    repo = make_repo(tmp_path / "ok", PYTEST_STYLE)
    run_id = submit(d, tmp_path, repo)
    st = wait_state(d, run_id, timeout=180)
    assert st.state == "succeeded", (st, events(d, run_id, "check_finished"))
    (detected,) = events(d, run_id, "checks_detected")
    assert detected["checks"] == [PYTEST]
    (check,) = events(d, run_id, "check_finished")
    assert check["tests"]["runner"] == "pytest"
    assert check["tests"]["ran"] == 2
    assert check["tests"]["passed"] == 2


def test_failing_test_fails_the_run(offline_daemon: Any, tmp_path: Path) -> None:
    d = offline_daemon
    broken = {**PYTEST_STYLE, "calc/__init__.py": "def add(a, b):\n    return a - b\n"}
    run_id = submit(d, tmp_path, make_repo(tmp_path / "broken", broken))
    st = wait_state(d, run_id, timeout=180)
    assert st.state == "failed"
    (c,) = events(d, run_id, "classified")
    assert c["pattern"] == "test_failure"
    check = events(d, run_id, "check_finished")[-1]
    assert check["tests"]["failed"] == 1
    assert check["tests"]["ran"] == 2


def test_unittest_suite_runs_under_pytest_with_its_count(offline_daemon: Any,
                                                        tmp_path: Path) -> None:
    d = offline_daemon
    repo = make_repo(tmp_path / "ut", {
        **CALC,
        "tests/__init__.py": "",
        "tests/test_calc.py": "import unittest\nfrom calc import add\n\n\n"
                              "class AddTest(unittest.TestCase):\n"
                              "    def test_add(self):\n        self.assertEqual(add(2, 2), 4)\n\n"
                              "    def test_neg(self):\n        self.assertEqual(add(-1, 1), 0)\n\n"
                              "    def test_big(self):\n        self.assertEqual(add(10, 5), 15)\n",
    })
    run_id = submit(d, tmp_path, repo)
    st = wait_state(d, run_id, timeout=180)
    assert st.state == "succeeded", (st, events(d, run_id, "check_finished"))
    (check,) = events(d, run_id, "check_finished")
    assert check["command"] == PYTEST
    assert check["tests"]["ran"] == 3


def test_zero_tests_fail_as_no_tests_collected_even_with_exit_0(offline_daemon: Any,
                                                              tmp_path: Path) -> None:
    d = offline_daemon
    empty = make_repo(tmp_path / "empty", {
        **CALC, "pyproject.toml": "[tool.pytest.ini_options]\ntestpaths = ['tests']\n",
        "tests/test_calc.py": "# tests to come\n"})
    # detected pytest: "no tests ran", exit 5
    run_py = submit(d, tmp_path, empty, name="a.json")
    # unittest exits 0 on Python 3.11 with "Ran 0 tests ... OK": still a failure
    run_ut = submit(d, tmp_path, empty, {"checks": ["python -m unittest"]}, name="b.json")
    # unless the phase allows it
    run_ok = submit(d, tmp_path, empty, {"checks": ["python -m unittest", PYTEST],
                                         "allow_no_tests": True}, name="c.json")
    for run_id in (run_py, run_ut):
        st = wait_state(d, run_id, timeout=180)
        assert st.state == "failed", st
        assert "no_tests_collected" in (st.reason or ""), st.reason
        (c,) = events(d, run_id, "classified")
        assert c["pattern"] == "no_tests_collected"
        assert events(d, run_id, "check_finished")[-1]["tests"]["ran"] == 0
    ut = events(d, run_ut, "check_finished")[-1]
    assert ut["exit_code"] == 0
    assert ut["no_tests"] is True
    st = wait_state(d, run_ok, timeout=180)
    assert st.state == "succeeded", (st, events(d, run_ok, "check_finished"))
    assert [c["tests"]["ran"] for c in events(d, run_ok, "check_finished")] == [0, 0]


def test_spec_validates_new_fields(tmp_path: Path) -> None:
    from autopack.protocol import SpecError, validate_spec

    spec = validate_spec({"goal": "g", "setup": ["make deps"], "phases": [
        {"id": "a", "goal": "g", "allow_no_tests": True}]})
    assert spec.setup == ["make deps"]
    assert spec.phases[0].allow_no_tests is True
    assert validate_spec({"goal": "g", "phases": [{"id": "a", "goal": "g"}]}).setup is None
    with pytest.raises(SpecError) as err:
        validate_spec({"goal": "g", "setup": "make deps", "phases": [
            {"id": "a", "goal": "g", "allow_no_tests": "yes"}]})
    paths = [p for p, _ in err.value.problems]
    assert paths == ["setup", "phases[0].allow_no_tests"]


SRC_LAYOUT = {  # only importable once installed: src/ is not on sys.path by itself
    "pyproject.toml": "[build-system]\nrequires = ['setuptools>=61']\n"
                      "build-backend = 'setuptools.build_meta'\n"
                      "[project]\nname = 'srccalc'\nversion = '1.0'\n"
                      "[project.optional-dependencies]\ntest = ['pytest']\n"
                      "[tool.setuptools.packages.find]\nwhere = ['src']\n",
    "src/srccalc/__init__.py": "VALUE = 1\n",
    "tests/test_value.py": "import srccalc\n\n\ndef test_value():\n    assert srccalc.VALUE == 1\n",
}


def test_src_layout_installed_once_then_reused(offline_daemon: Any, tmp_path: Path) -> None:
    from tests.conftest import git

    d = offline_daemon
    repo = make_repo(tmp_path / "src", SRC_LAYOUT)
    phase = {"checks": ["python -m pytest -q",
                        "python -c 'import os, sys; assert sys.prefix == os.environ[\"VIRTUAL_ENV\"]"
                        " != sys.base_prefix, sys.prefix'"]}
    first = submit(d, tmp_path, repo, phase, name="1.json")
    st = wait_state(d, first, timeout=240)
    assert st.state == "succeeded", (st, events(d, first, "install_finished"))
    (started,) = events(d, first, "install_started")
    assert started["source"] == "detected"
    assert started["reused"] is False
    assert any("install -e '.[test]'" in s for s in started["steps"]), started
    assert all(e["exit_code"] == 0 for e in events(d, first, "install_finished"))
    assert events(d, first, "check_finished")[0]["tests"]["ran"] == 1
    # the install left no build output to be committed
    assert not list(repo.glob("src/*.egg-info"))
    # same install inputs, new code: the ready environment is reused and points at the
    # new run's worktree (the first one is gone)
    (repo / "src/srccalc/__init__.py").write_text("VALUE = 2\n")
    (repo / "tests/test_value.py").write_text(
        "import srccalc\n\n\ndef test_value():\n    assert srccalc.VALUE == 2\n")
    git(repo, "commit", "-qam", "two")
    second = submit(d, tmp_path, repo, phase, name="2.json")
    st = wait_state(d, second, timeout=240)
    assert st.state == "succeeded", (st, events(d, second, "check_finished"))
    (started,) = events(d, second, "install_started")
    assert started["reused"] is True
    assert started["steps"] == []
    assert events(d, second, "install_finished") == []
    assert events(d, second, "check_finished")[0]["tests"]["ran"] == 1
    # changed install inputs: installed again
    (repo / "pyproject.toml").write_text(SRC_LAYOUT["pyproject.toml"].replace("1.0", "1.1"))
    git(repo, "commit", "-qam", "three")
    third = submit(d, tmp_path, repo, phase, name="3.json")
    assert wait_state(d, third, timeout=240).state == "succeeded"
    assert events(d, third, "install_started")[0]["reused"] is False


def test_failing_install_step_is_classified(offline_daemon: Any, tmp_path: Path) -> None:
    d = offline_daemon
    repo = make_repo(tmp_path / "req", {**PYTEST_STYLE,
                                        "requirements.txt": "no-such-dist-autopack-xyz\n"})
    detected = submit(d, tmp_path, repo, name="a.json")
    spec_setup = submit(d, tmp_path, repo, name="b.json",
                        setup=["python -m pip install no-such-dist-autopack-xyz"])
    for run_id in (detected, spec_setup):
        st = wait_state(d, run_id, timeout=240)
        assert st.state == "failed"
        assert "install step failed: package_not_found" in (st.reason or ""), st.reason
        (c,) = events(d, run_id, "classified")
        assert c["pattern"] == "package_not_found"
        assert c["stage"] == "install"
        assert events(d, run_id, "check_started") == []  # no check ran
    (started,) = events(d, spec_setup, "install_started")
    assert started["source"] == "spec"
    assert started["steps"] == ["python -m pip install no-such-dist-autopack-xyz"]


def test_node_package_runs_its_real_npm_test(offline_daemon: Any, tmp_path: Path) -> None:

    require_system("node", "nodejs")
    require_system("npm", "npm")
    d = offline_daemon
    pkg = '{"name": "n", "version": "1.0.0", "scripts": {"test": "node --test"}}'
    lock = '{"name": "n", "version": "1.0.0", "lockfileVersion": 3, "requires": true, ' \
           '"packages": {"": {"name": "n", "version": "1.0.0"}}}'
    test = "const test = require('node:test');\nconst assert = require('node:assert');\n" \
           "test('adds', () => { assert.strictEqual(1 + 1, 2); });\n"
    ok = make_repo(tmp_path / "node", {"package.json": pkg, "package-lock.json": lock,
                                        "test/add.test.js": test})
    bad = make_repo(tmp_path / "nodebad", {"package.json": pkg, "package-lock.json": lock,
                                           "test/add.test.js": test.replace("2)", "3)")})
    run_ok, run_bad = submit(d, tmp_path, ok, name="a.json"), submit(d, tmp_path, bad, name="b.json")
    st = wait_state(d, run_ok, timeout=240)
    assert st.state == "succeeded", (st, events(d, run_ok, "check_finished"))
    assert events(d, run_ok, "checks_detected")[0]["checks"] == ["npm test"]
    assert [e["command"] for e in events(d, run_ok, "install_finished")] == ["npm ci"]
    assert wait_state(d, run_bad, timeout=240).state == "failed"


def _node_dep_repo(path: Path) -> Path:
    """A Node package depending on a local tarball (installs offline: real ``npm ci``
    unpacks it into node_modules); node_modules is NOT gitignored."""
    import base64
    import gzip
    import hashlib
    import io
    import tarfile

    from tests.conftest import git

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, text in (("package/package.json",
                            '{"name": "dep", "version": "1.0.0", "main": "index.js"}'),
                           ("package/index.js", "module.exports = (a, b) => a + b;\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(text.encode()), 0o644
            tar.addfile(info, io.BytesIO(text.encode()))
    tgz = gzip.compress(raw.getvalue(), mtime=0)
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode()
    pkg = {"name": "n", "version": "1.0.0", "scripts": {"test": "node --test"},
           "dependencies": {"dep": "file:dep-1.0.0.tgz"}}
    lock = {"name": "n", "version": "1.0.0", "lockfileVersion": 3, "requires": True,
            "packages": {"": {"name": "n", "version": "1.0.0",
                              "dependencies": {"dep": "file:dep-1.0.0.tgz"}},
                         "node_modules/dep": {"version": "1.0.0", "resolved": "file:dep-1.0.0.tgz",
                                              "integrity": integrity}}}
    test = "const test = require('node:test');\nconst assert = require('node:assert');\n" \
           "const add = require('dep');\ntest('adds', () => { assert.strictEqual(add(1, 1), 2); });\n"
    repo = make_repo(path, {"package.json": json.dumps(pkg), "package-lock.json": json.dumps(lock),
                            "test/add.test.js": test})
    (repo / "dep-1.0.0.tgz").write_bytes(tgz)
    git(repo, "add", "dep-1.0.0.tgz")
    git(repo, "commit", "-qm", "the dependency")
    return repo


def test_node_modules_kept_ready_and_reused_never_committed(offline_daemon: Any,
                                                             tmp_path: Path) -> None:

    from tests.conftest import git

    require_system("node", "nodejs")
    require_system("npm", "npm")
    d = offline_daemon
    repo = _node_dep_repo(tmp_path / "nodedep")
    # the phase changes a file, so the run commits: node_modules must stay out of it
    phase = {"checks": ["echo more >> notes.txt", "test -f node_modules/dep/index.js",
                        "npm test"]}

    def run(name: str) -> str:
        run_id = submit(d, tmp_path, repo, phase, name=name)
        st = wait_state(d, run_id, timeout=240)
        assert st.state == "succeeded", (st, events(d, run_id, "install_finished"),
                                         events(d, run_id, "check_finished"))
        files = git(repo, "ls-tree", "-r", "--name-only", f"autopack/{run_id}").splitlines()
        assert "notes.txt" in files
        assert not [f for f in files if "node_modules" in f], files
        return run_id

    first = run("1.json")
    (started,) = events(d, first, "install_started")
    assert (started["reused"], started["node_reused"]) == (False, False)
    assert [e["command"] for e in events(d, first, "install_finished")] == ["npm ci"]
    assert events(d, first, "env_ready")[0]["reused"] is False
    # same package.json and lockfile: the ready node_modules is cloned, npm ci is not run
    second = run("2.json")
    (started,) = events(d, second, "install_started")
    assert (started["reused"], started["node_reused"], started["steps"]) == (True, True, [])
    assert started["node_key"] == events(d, first, "install_started")[0]["node_key"]
    assert events(d, second, "install_finished") == []
    assert events(d, second, "env_ready")[0]["reused"] is True
    # a changed package.json (and lockfile): installed again
    for name in ("package.json", "package-lock.json"):
        (repo / name).write_text((repo / name).read_text().replace('"1.0.0", "lock',
                                                                  '"1.0.1", "lock')
                                 .replace('"n", "version": "1.0.0"', '"n", "version": "1.0.1"'))
    git(repo, "commit", "-qam", "1.0.1")
    third = run("3.json")
    assert events(d, third, "install_started")[0]["node_reused"] is False
    assert [e["command"] for e in events(d, third, "install_finished")] == ["npm ci"]

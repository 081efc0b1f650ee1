"""Projects with a lockfile, through the real daemon: the locked versions, a stale lock refused.

Each project is made in the test and locked by the real tool (``uv lock``,
``poetry lock``) against a local wheelhouse holding ``pinme 1.0``; then a
newer ``pinme 2.0`` is added beside it, so a resolver would now pick 2.0 and
only the lock keeps 1.0. The check (a ``command`` phase, no LLM) imports the
project (src layout: only an installed project imports) and asserts the
version. Nothing reaches the network: uv reads the wheelhouse directly
(``UV_FIND_LINKS``, ``UV_NO_INDEX``, ``UV_OFFLINE``); poetry only speaks HTTP
to a package source, so the wheelhouse is served as a PEP 503 index on
loopback (the install step has the network by default; loopback is the host's).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from autopack.actors._install import poetry_binary, uv_binary

from tests._wheels import build_wheelhouse, make_wheel, offline_env, serve, simple_index
from tests.conftest import event_payloads, git, make_repo, submit_phase, wait_state

CHECK = "python -m pytest -q"
TEST_FILE = ("import pinme\nimport proj\n\n\ndef test_locked_version():\n"
             "    assert proj.PINNED == pinme.VERSION == '1.0'\n")
SRC = {"src/proj/__init__.py": "from pinme import VERSION as PINNED\n", "tests/test_v.py": TEST_FILE}

UV_PYPROJECT = """\
[project]
name = "proj"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = [DEPS]

[dependency-groups]
dev = ["pytest"]

[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[tool.uv]
# the lock is universal: without this it would want pytest's colorama for Windows
environments = ["sys_platform == 'linux'"]
"""

POETRY_PYPROJECT = """\
[project]
name = "proj"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = [DEPS]

[tool.poetry]
packages = [{ include = "proj", from = "src" }]

[tool.poetry.group.dev.dependencies]
pytest = "*"

[[tool.poetry.source]]
name = "local"
url = "URL"
priority = "primary"

[build-system]
requires = ["poetry-core>=2.0"]
build-backend = "poetry.core.masonry.api"
"""


@pytest.fixture(scope="module")
def base_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = build_wheelhouse(tmp_path_factory.mktemp("wheels"))
    # poetry locks for every platform: pytest's Windows-only colorama must exist by name
    # (never installed here)
    make_wheel(out, "colorama", "0.4.6")
    return out


@pytest.fixture
def wheelhouse(base_wheels: Path, tmp_path: Path) -> Path:
    out = tmp_path / "wheels"
    shutil.copytree(base_wheels, out)
    make_wheel(out, "pinme", "1.0")
    return out


def _daemon(daemon_factory: Any, wheelhouse: Path) -> Any:
    # the wheelhouse sits in the host's /tmp: the operator lets sandboxes read it
    return daemon_factory(env={**offline_env(wheelhouse), "ANTHROPIC_API_KEY": ""},
                          config={"sandbox_read_only": [str(wheelhouse)]})


def _submit(d: Any, tmp_path: Path, repo: Path, name: str) -> str:
    return submit_phase(d, tmp_path, repo, {"checks": [CHECK]}, name=name)


_events = event_payloads


def _tool_env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    return {**env, **extra, "UV_CACHE_DIR": str(tmp_path / "lock-cache"),
            "POETRY_CACHE_DIR": str(tmp_path / "lock-cache" / "poetry"),
            "POETRY_CONFIG_DIR": str(tmp_path / "poetry-config"),
            "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}


def _locked_then_stale(d: Any, tmp_path: Path, repo: Path, lockfile: str) -> None:
    """The run installs the locked 1.0 (2.0 is there too); with pyproject.toml changed
    after locking, the install step is refused and classified."""
    # the tool locked 1.0 (only it existed then)
    assert 'name = "pinme"\nversion = "1.0"\n' in (repo / lockfile).read_text()
    run_id = _submit(d, tmp_path, repo, "locked.json")
    st = wait_state(d, run_id, timeout=240)
    check = _events(d, run_id, "check_finished")
    assert st.state == "succeeded", (st, _events(d, run_id, "install_finished"), check)
    assert check[-1]["tests"]["passed"] == 1
    (started,) = _events(d, run_id, "install_started")
    assert started["reused"] is False
    # stale: a dependency added to pyproject.toml, the lock left as it was
    py = repo / "pyproject.toml"
    py.write_text(py.read_text().replace('"pinme>=1.0"', '"pinme>=1.0", "iniconfig"'))
    git(repo, "commit", "-q", "-am", "a new dependency, not locked")
    run_id = _submit(d, tmp_path, repo, "stale.json")
    st = wait_state(d, run_id, timeout=240)
    assert st.state == "failed"
    assert st.reason.startswith("install step failed: dependency_conflict"), st.reason
    (c,) = _events(d, run_id, "classified")
    assert (c["stage"], c["pattern"]) == ("install", "dependency_conflict")
    assert c["details"]["lockfile"] == lockfile
    assert _events(d, run_id, "check_finished") == []  # nothing tested on a wrong env


def test_uv_lock_installs_the_locked_versions_and_a_stale_lock_is_refused(
        daemon_factory: Any, wheelhouse: Path, tmp_path: Path) -> None:
    uv = uv_binary()
    assert uv is not None  # a dependency of autopack
    files = {"pyproject.toml": UV_PYPROJECT.replace("DEPS", '"pinme>=1.0"'), **SRC}
    repo = make_repo(tmp_path / "proj", files)
    done = subprocess.run([uv, "lock"], cwd=repo, capture_output=True, text=True,
                          env=_tool_env(tmp_path, offline_env(wheelhouse)), timeout=120)
    assert done.returncode == 0, done.stderr
    git(repo, "add", "uv.lock")
    git(repo, "commit", "-q", "-m", "lock")
    make_wheel(wheelhouse, "pinme", "2.0")  # newer, and not what the lock says
    d = _daemon(daemon_factory, wheelhouse)
    _locked_then_stale(d, tmp_path, repo, "uv.lock")


def test_poetry_lock_installs_the_locked_versions_and_a_stale_lock_is_refused(
        daemon_factory: Any, wheelhouse: Path, tmp_path: Path) -> None:
    poetry = poetry_binary()
    assert poetry is not None, "poetry is a test extra: make setup installs it"
    index = simple_index(wheelhouse, tmp_path / "index")
    with serve(index) as url:
        files = {"pyproject.toml": POETRY_PYPROJECT.replace("DEPS", '"pinme>=1.0"')
                 .replace("URL", url), **SRC}
        repo = make_repo(tmp_path / "proj", files)
        done = subprocess.run([poetry, "lock", "--no-interaction"], cwd=repo,
                              capture_output=True, text=True, env=_tool_env(tmp_path, {}),
                              timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        git(repo, "add", "poetry.lock")
        git(repo, "commit", "-q", "-m", "lock")
        make_wheel(index / "pinme", "pinme", "2.0")  # newer, and not what the lock says
        d = _daemon(daemon_factory, wheelhouse)
        _locked_then_stale(d, tmp_path, repo, "poetry.lock")

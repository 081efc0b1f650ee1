"""Failure hardening through the daemon: classify → safe action → checks again → pass."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from autopack.protocol import Submit, parse_spec_text

from tests._wheels import build_wheelhouse, offline_env

from .conftest import make_repo, wait_state, write_spec

MODULE = "apwheeldemo"


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    """A local wheel of a tiny distribution nobody has installed (built offline)."""
    src = tmp_path_factory.mktemp("src")
    (src / MODULE).mkdir()
    (src / MODULE / "__init__.py").write_text("VALUE = 42\n")
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{MODULE}"\nversion = "1.0"\n')
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(src)], check=True, capture_output=True)
    assert list(out.glob("*.whl"))
    return build_wheelhouse(out)  # and what the run's install step needs (setuptools, …)


def hardened_daemon(daemon_factory, wheelhouse: Path, **config):
    # the wheelhouse sits in the host's /tmp: the operator lets sandboxes read it
    return daemon_factory(env={**offline_env(wheelhouse), "ANTHROPIC_API_KEY": ""},
                          config={"sandbox_read_only": [str(wheelhouse)], **config})


def spec_importing(tmp_path: Path) -> Path:
    return write_spec(tmp_path / "s.json", [{
        "id": "use-dep", "goal": "use the dependency", "kind": "command",
        "checks": [f"python -c 'import {MODULE}; assert {MODULE}.VALUE == 42'"]}])


def run_events(d, run_id: str) -> list[dict]:
    return [json.loads(x) for x in d.ctl("logs", run_id, "--json").stdout.splitlines()]


def test_missing_module_installed_into_run_venv_and_recheck_passes(daemon_factory, wheelhouse,
                                                                   tmp_path):
    d = hardened_daemon(daemon_factory, wheelhouse)
    repo = make_repo(tmp_path / "repo", {"pyproject.toml": '[project]\nname = "x"\nversion = "0"\n'})
    res = d.ctl("submit", str(spec_importing(tmp_path)), "--repo", str(repo), "--json")
    run_id = json.loads(res.stdout)["run_id"]
    st = wait_state(d, run_id, timeout=120)
    assert st.state == "succeeded", st
    assert st.phases[0].attempts == 1  # fixed inside the attempt, zero tokens
    evs = run_events(d, run_id)
    classified = [e["payload"] for e in evs if e["kind"] == "classified"]
    assert classified[0]["pattern"] == "python_missing_dep"
    assert classified[0]["details"].get("module") == MODULE
    assert classified[0]["doctor_avoidable"] > 0
    # the mitigation led to a passing check without the Doctor: the avoided call is credited
    avoided = [e["payload"] for e in evs if e["kind"] == "doctor_avoided"]
    assert len(avoided) == 1
    assert avoided[0]["tokens_avoided"] == classified[0]["doctor_avoidable"]
    mitigation = [e["payload"] for e in evs if e["kind"] == "mitigation"]
    assert mitigation[0]["ok"]
    assert mitigation[0]["acted"]
    assert mitigation[0]["undeclared"]  # installed but not declared in the manifest
    checks = [e["payload"]["exit_code"] for e in evs if e["kind"] == "check_finished"]
    assert checks == [1, 0]
    # nothing leaked into the daemon's or the machine's interpreter
    probe = subprocess.run([sys.executable, "-c", f"import {MODULE}"], capture_output=True)
    assert probe.returncode != 0
    # the run's venv is removed with its worktree (just after the run's end is recorded)
    deadline = time.monotonic() + 30
    while (d.state_dir / "envs" / run_id).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (d.state_dir / "envs" / run_id).exists()
    stats = json.loads(d.ctl("stats", "--json").stdout)
    assert stats["failures_classified"] == 1
    assert stats["tokens_avoided"] > 0


def test_hardening_off_by_flag_leaves_failure_to_the_doctor(daemon_factory, wheelhouse, tmp_path):
    d = hardened_daemon(daemon_factory, wheelhouse, enable_failure_hardening=False)
    repo = make_repo(tmp_path / "repo")
    run_id = json.loads(d.ctl("submit", str(spec_importing(tmp_path)), "--repo", str(repo),
                              "--json").stdout)["run_id"]
    st = wait_state(d, run_id, timeout=60)
    assert st.state == "failed"
    assert "unclassified" in st.reason
    kinds = [e["kind"] for e in run_events(d, run_id)]
    assert "mitigation" not in kinds


def test_baseline_arm_has_hardening_off(daemon_factory, wheelhouse, tmp_path):
    d = hardened_daemon(daemon_factory, wheelhouse)
    repo = make_repo(tmp_path / "repo")
    spec = parse_spec_text(spec_importing(tmp_path).read_text(), fmt="json")
    with d.client() as c:
        base = c.request(Submit(spec=spec, repo=str(repo), arm="baseline")).run_id
        hard = c.request(Submit(spec=spec, repo=str(repo), arm="hardened")).run_id
    assert wait_state(d, base, timeout=120).state == "failed"
    assert wait_state(d, hard, timeout=120).state == "succeeded"
    by_arm = json.loads(d.ctl("stats", "--by-arm", "--json").stdout)["arms"]
    assert by_arm["baseline"]["failures_classified"] == 0
    assert by_arm["hardened"]["failures_classified"] == 1


def test_classify_cli_without_daemon(tmp_path):
    from .conftest import BIN

    log = tmp_path / "out.log"
    log.write_text("Traceback (most recent call last):\n  File \"t.py\", line 1, in <module>\n"
                   "ModuleNotFoundError: No module named 'yaml'\n")
    res = subprocess.run([str(BIN / "autopackctl"), "classify", str(log), "--exit-code", "1",
                          "--json"], capture_output=True, text=True)
    assert res.returncode == 0
    data = json.loads(res.stdout)
    assert data["pattern"] == "python_missing_dep"
    assert data["mitigation"]["package"] == "PyYAML"
    assert set(data) >= {"pattern", "evidence", "details", "mitigation"}

"""Build phases end to end: real daemon, real SDK, the scripted Messages API server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import git, make_repo, wait_state, write_spec

SCENARIOS = Path(__file__).parent / "scenarios"
DEMO_REPO = Path(__file__).parent.parent / "examples" / "demo-repo"


class ModelServer:
    def __init__(self, scenario: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "autopack.testing", "--scenario", str(scenario),
             "--port", "0"], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.url

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url + "/_stats", timeout=10) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture
def model() -> Iterator[ModelServer]:
    server = ModelServer(SCENARIOS / "build_daemon.json")
    yield server
    server.stop()


@pytest.fixture
def llm_daemon(daemon_factory, model):
    return daemon_factory(env={"ANTHROPIC_BASE_URL": model.url,
                               "ANTHROPIC_API_KEY": "sk-ant-test-not-a-real-key-123456"},
                          config={"builder_attempt_wall_s": 60})


@pytest.fixture
def calc(tmp_path: Path) -> Path:
    dest = tmp_path / "calc"
    shutil.copytree(DEMO_REPO, dest)
    return make_repo(dest, {})


def submit(d, spec: Path, repo: Path) -> str:
    res = d.ctl("submit", str(spec), "--repo", str(repo), "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["run_id"]


def events(d, run_id: str) -> list[dict]:
    res = d.ctl("logs", run_id, "--json")
    return [json.loads(line) for line in res.stdout.splitlines()]


def test_build_phase_edits_files_reverts_drift_and_counts_tokens(llm_daemon, model, calc, tmp_path):
    spec = write_spec(tmp_path / "s.json", [{
        "id": "add-sub", "goal": "Add subtract() with a test", "kind": "build",
        "scope": ["calc/**", "tests/**"], "checks": ["python -m pytest -q"]}])
    run_id = submit(llm_daemon, spec, calc)
    st = wait_state(llm_daemon, run_id, timeout=120)
    assert st.state == "succeeded", st
    tree = git(calc, "ls-tree", "-r", "--name-only", f"autopack/{run_id}").splitlines()
    assert "tests/test_sub.py" in tree
    assert "notes/outside-scope.txt" not in tree  # drift reverted
    assert "def subtract" in git(calc, "show", f"autopack/{run_id}:calc/ops.py")
    evs = events(llm_daemon, run_id)
    drift = [e for e in evs if e["kind"] == "drift"]
    assert drift
    assert drift[0]["payload"]["files"] == ["notes/outside-scope.txt"]
    report = json.loads(llm_daemon.ctl("report", run_id, "--json").stdout)
    served = model.stats()["usage_totals"]
    assert report["tokens"] == {
        "input": served["input_tokens"], "output": served["output_tokens"],
        "cache_creation": served["cache_creation_input_tokens"],
        "cache_read": served["cache_read_input_tokens"]}
    # input tokens derive from what the requests carried; every call is priced
    # (claude-sonnet-4-6: $3 input, $15 output, $3.75 cache write, $0.30 cache read per Mtok)
    t = report["tokens"]
    assert t["input"] + t["cache_creation"] + t["cache_read"] > 500
    assert t["cache_read"] > 0  # the second turn reads the first from the prompt cache
    expected = (served["input_tokens"] * 3 + served["output_tokens"] * 15
                + served["cache_creation_input_tokens"] * 3.75
                + served["cache_read_input_tokens"] * 0.3) / 1e6
    assert report["cost"]["total_usd"] == pytest.approx(expected)
    calls = report["phases"][0]["calls"]
    assert len(calls) == report["cost"]["calls"] >= 2
    assert sum(c["cost_usd"] for c in calls) == pytest.approx(expected)
    assert report["cost"]["unpriced_calls"] == 0


def test_unknown_failure_goes_to_doctor_then_hint_passes(llm_daemon, model, repo, tmp_path):
    spec = write_spec(tmp_path / "s.json", [{
        "id": "fix-mystery", "goal": "Make the mystery check pass", "kind": "build",
        "checks": ["test \"$(cat magic.txt 2>/dev/null)\" = 42 || { echo 'mystery: no'; exit 7; }"]}])
    run_id = submit(llm_daemon, spec, repo)
    st = wait_state(llm_daemon, run_id, timeout=120)
    assert st.state == "succeeded", st
    assert st.phases[0].attempts == 2
    evs = events(llm_daemon, run_id)
    doctor = [e for e in evs if e["kind"] == "doctor_called"]
    assert len(doctor) == 1
    assert doctor[0]["payload"]["decision"] == "retry_with_hint"
    classified = [e for e in evs if e["kind"] == "classified"]
    assert classified[0]["payload"]["pattern"] is None
    assert classified[0]["payload"]["doctor_avoidable"] == 0
    assert not [e for e in evs if e["kind"] == "doctor_avoided"]
    assert git(repo, "show", f"autopack/{run_id}:magic.txt") == "42"


def test_repeated_identical_failure_stops_as_stuck(llm_daemon, repo, tmp_path):
    spec = write_spec(tmp_path / "s.json", [{
        "id": "stuck-one", "goal": "Never works", "kind": "build",
        "checks": ["python3 -c 'import sys; sys.exit(\"no luck\")'"]}],
        limits={"max_attempts": 5, "doctor_calls_per_phase": 0})
    run_id = submit(llm_daemon, spec, repo)
    st = wait_state(llm_daemon, run_id, timeout=120)
    assert st.state == "failed"
    assert "stuck" in st.reason
    assert st.phases[0].attempts == 2  # not 5: stopped as soon as it repeated


def test_path_escapes_are_refused(llm_daemon, repo, tmp_path):
    spec = write_spec(tmp_path / "s.json", [{
        "id": "escape", "goal": "Try to escape", "kind": "build", "checks": ["true"]}])
    run_id = submit(llm_daemon, spec, repo)
    st = wait_state(llm_daemon, run_id, timeout=120)
    assert st.state == "succeeded"
    assert not (tmp_path / "escaped.txt").exists()
    assert not (repo.parent / "escaped.txt").exists()
    finished = [e for e in events(llm_daemon, run_id) if e["kind"] == "builder_finished"]
    assert finished[0]["payload"]["refused"] == 2


def test_budget_exhaustion_ends_run_with_reason(llm_daemon, model, repo, tmp_path):
    # each Builder turn prints ~29 KB, so every request is larger than the one before;
    # the input tokens the scripted server bills are derived from what the requests carry
    spec = write_spec(tmp_path / "s.json", [{
        "id": "big-spender", "goal": "Spend a lot", "kind": "build", "checks": ["true"]}],
        limits={"token_budget": 30000})
    run_id = submit(llm_daemon, spec, repo)
    st = wait_state(llm_daemon, run_id, timeout=120)
    assert st.state == "failed"
    assert st.reason.startswith("budget_exhausted: run budget exhausted"), st.reason
    report = json.loads(llm_daemon.ctl("report", run_id, "--json").stdout)
    spent = sum(report["tokens"].values())
    assert 0 < spent <= 30000  # not one token over
    ended = [e["payload"] for e in events(llm_daemon, run_id) if e["kind"] == "budget_exhausted"]
    assert len(ended) == 1
    assert ended[0]["scope"] == "run"
    assert ended[0]["unit"] == "tokens"
    assert ended[0]["spent"] == spent
    assert ended[0]["spent"] + ended[0]["needed"] > 30000  # the refused call could have overshot


def test_rejected_key_fails_at_once(llm_daemon, model, repo, tmp_path):
    spec = write_spec(tmp_path / "s.json", [{
        "id": "denied", "goal": "Denied", "kind": "build", "checks": ["true"]}])
    run_id = submit(llm_daemon, spec, repo)
    st = wait_state(llm_daemon, run_id, timeout=60)
    assert st.state == "failed"
    assert "authentication" in st.reason.lower()
    assert model.stats()["by_status"].get("401") == 1  # no retries
    llm_daemon.stop()  # the run's clean-up (worktree, env, private /tmp) ends before the scan
    log = llm_daemon.log.read_text()
    assert "sk-ant-test-not-a-real-key" not in log
    # database, WAL, reports, locks (os.walk: the run's environment may be going away meanwhile)
    for root, _dirs, files in os.walk(llm_daemon.state_dir):
        for name in files:
            path = Path(root) / name
            if not path.is_file():  # the control socket
                continue
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            assert b"sk-ant-test-not-a-real-key" not in data, path


def test_missing_key_fails_run_with_clear_reason(daemon_factory, repo, tmp_path):
    d = daemon_factory(env={"ANTHROPIC_API_KEY": "", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"})
    spec = write_spec(tmp_path / "s.json", [{
        "id": "needs-llm", "goal": "Needs the Builder", "kind": "build", "checks": ["true"]}])
    run_id = submit(d, spec, repo)
    st = wait_state(d, run_id, timeout=60)
    assert st.state == "failed"
    assert "API key" in st.reason


def test_normalize_llm_goes_through_the_daemon(llm_daemon, model, repo, tmp_path):
    plan = tmp_path / "plan.md"
    plan.write_text("# PLAN-LLM-MARKER\n\n1. Add x to `src/x.py` and run `pytest -q`\n")
    res = llm_daemon.ctl("normalize", str(plan), "--repo", str(repo), "--llm", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert (out["goal"], out["phases"][0]["id"], out["repo"]) == ("from the llm", "llm-phase",
                                                                 str(repo))
    assert any("LLM" in w for w in out["warnings"])
    totals = model.stats()["usage_totals"]
    assert totals["input_tokens"] + totals["cache_creation_input_tokens"] > 900  # schema + plan


def test_refused_doctor_call_is_a_failed_doctor_call_not_a_crash(llm_daemon, repo, tmp_path):
    spec = write_spec(tmp_path / "s.json", [{
        "id": "doctor-down", "goal": "Doctor refuses", "kind": "build",
        "checks": ["echo 'opaque failure 17'; exit 3"]}], limits={"max_attempts": 2})
    run_id = submit(llm_daemon, spec, repo)
    st = wait_state(llm_daemon, run_id, timeout=60)
    assert st.state == "failed"
    assert "internal error" not in st.reason
    doctor = [e for e in events(llm_daemon, run_id) if e["kind"] == "doctor_called"]
    assert doctor[0]["payload"]["decision"] == "error"


def test_doctor_calls_per_run_limit_spans_phases(llm_daemon, model, repo, tmp_path):
    spec = write_spec(tmp_path / "s.json", [
        {"id": "lim-a", "goal": "needs the Doctor once", "kind": "build",
         "checks": ["test -f flag.txt || { echo 'quirk 41'; exit 5; }"]},
        {"id": "lim-b", "goal": "would need it again", "kind": "build",
         "checks": ["echo 'quirk 42'; exit 6"]}],
        limits={"doctor_calls_per_run": 1, "max_attempts": 2})
    run_id = submit(llm_daemon, spec, repo)
    st = wait_state(llm_daemon, run_id, timeout=120)
    assert st.state == "failed"
    assert [p.state for p in st.phases] == ["succeeded", "failed"]
    doctor = [e for e in events(llm_daemon, run_id) if e["kind"] == "doctor_called"]
    assert len(doctor) == 1  # the run's one Doctor call went to lim-a
    assert model.stats()["by_script"].get("Diagnose the failure of phase lim-b", 0) == 0

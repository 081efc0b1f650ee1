"""The memory actor inside the daemon: context reaches the Builder; runs survive memory trouble."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from .conftest import wait_state, write_spec
from .test_build_phases import ModelServer

SCENARIO = Path(__file__).parent / "scenarios" / "memory_daemon.json"
MARKER = "constraint-marker-7f3a"


@pytest.fixture
def model():
    server = ModelServer(SCENARIO)
    yield server
    server.stop()


def llm_env(model) -> dict[str, str]:
    return {"ANTHROPIC_BASE_URL": model.url, "ANTHROPIC_API_KEY": "test-key"}


def marker_spec(tmp_path: Path) -> Path:
    # the marker is only in the run's constraints: the scripted model answers only when
    # the intention context (built by the memory actor) is in the Builder's system prompt
    return write_spec(tmp_path / "s.json", [{
        "id": "ctx-build", "goal": "create done.txt", "kind": "build", "checks": ["test -f done.txt"]}],
        constraints=[f"respect {MARKER}"], goal="exercise the intention context")


def events(d, run_id):
    return [json.loads(x) for x in d.ctl("logs", run_id, "--json").stdout.splitlines()]


def test_intention_context_reaches_the_builder(daemon_factory, model, repo, tmp_path):
    d = daemon_factory(env=llm_env(model))
    run_id = json.loads(d.ctl("submit", str(marker_spec(tmp_path)), "--repo", str(repo),
                              "--json").stdout)["run_id"]
    assert wait_state(d, run_id, timeout=60).state == "succeeded"
    ctx = json.loads(d.ctl("context", run_id, "--phase", "ctx-build", "--json").stdout)
    assert MARKER in ctx["text"]
    assert ctx["degraded"] is False
    assert ctx["bytes"] == len(ctx["text"].encode()) <= 2048
    doctor = json.loads(d.ctl("context", run_id, "--role", "doctor", "--json").stdout)
    assert doctor["bytes"] <= 512
    started = [e for e in events(d, run_id) if e["kind"] == "builder_started"]
    assert started[0]["payload"]["context_bytes"] > 0


def test_flag_off_means_no_context(daemon_factory, model, repo, tmp_path):
    d = daemon_factory(env={**llm_env(model), "AUTOPACK_ENABLE_INTENTION_CONTEXT": "false"})
    run_id = json.loads(d.ctl("submit", str(marker_spec(tmp_path)), "--repo", str(repo),
                              "--json").stdout)["run_id"]
    st = wait_state(d, run_id, timeout=60)
    # without the context the scripted model never sees the marker: no script matches
    assert st.state == "failed"
    started = [e for e in events(d, run_id) if e["kind"] == "builder_started"]
    assert started[0]["payload"]["context_bytes"] == 0


def test_unusable_memory_tables_degrade_but_run_completes(daemon_factory, model, repo, tmp_path):
    d = daemon_factory(env=llm_env(model))
    assert d.ctl("lessons").returncode == 0  # memory creates its tables on first use
    db = sqlite3.connect(d.state_dir / "autopack.db")
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                      "AND name LIKE 'mem_%' AND name NOT LIKE 'mem_lessons%'")]
    assert names
    for name in names:  # wreck every memory table the actor relies on
        db.execute(f"DROP TABLE {name}")
        db.execute(f"CREATE VIEW {name} AS SELECT 1 AS broken")
    db.commit()
    db.close()
    spec = write_spec(tmp_path / "p.json", [{"id": "plain-build", "goal": "create done.txt",
                                              "kind": "build", "checks": ["test -f done.txt"]}])
    run_id = json.loads(d.ctl("submit", str(spec), "--repo", str(repo), "--json").stdout)["run_id"]
    assert wait_state(d, run_id, timeout=60).state == "succeeded"
    assert any(e["kind"] == "memory_degraded" for e in events(d, run_id))
    health = json.loads(d.ctl("health", "--json").stdout)
    assert health["ready"] is True
    assert "memory" in health["degraded"]
    status, body = d.http("/readyz")
    assert status == 200
    assert "memory" in body["degraded"]


def test_context_of_a_running_run_before_any_model_call_is_its_intention(daemon_factory, repo,
                                                                         tmp_path):
    """``autopackctl context RUN`` shows what the next prompt would get: while the first
    phase (a command phase: no model call) holds the run, that is the run's intention and
    the phase's goal, not 0 bytes; once the run ended there is no next prompt."""
    d = daemon_factory()
    check = "for i in $(seq 600); do test -f go && exit 0; sleep 0.05; done; exit 9"
    spec = write_spec(tmp_path / "s.json", [
        {"id": "wait", "goal": "wait for the gate", "kind": "command", "checks": [check]}],
        constraints=[f"respect {MARKER}"], goal="exercise the context preview")
    res = d.ctl("submit", str(spec), "--repo", str(repo), "--json")
    assert res.returncode == 0, res.stderr
    run_id = json.loads(res.stdout)["run_id"]
    wait_state(d, run_id, states=("running",))
    out = d.ctl("context", run_id, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["degraded"] is False
    assert doc["bytes"] == len(doc["text"].encode()) > 0
    assert "exercise the context preview" in doc["text"]
    assert MARKER in doc["text"]
    assert "wait for the gate" in doc["text"]
    doctor = json.loads(d.ctl("context", run_id, "--role", "doctor", "--json").stdout)
    assert 0 < doctor["bytes"] <= 512
    human = d.ctl("context", run_id)
    assert human.returncode == 0
    assert "exercise the context preview" in human.stdout
    (d.state_dir / "worktrees" / run_id / "go").write_text("")  # the sandbox sees the worktree
    assert wait_state(d, run_id).state == "succeeded"
    ended = json.loads(d.ctl("context", run_id, "--json").stdout)
    assert ended["bytes"] == 0  # memory never recorded it, and it will not prompt again

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

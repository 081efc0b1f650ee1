"""Isolation per request and per run, and validation at the door (issue 13), through real
autopackd and autopackctl processes.

Each test reproduces a case reported against the old daemon: one request that ended it,
a poison run that crashed its actor forever and could not be cancelled, limits and scope
patterns accepted without bounds, a part whose requests failed while health said "ok".
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

import msgspec
import pytest
from autopack.protocol import (
    ErrorCode,
    Follow,
    GetHealth,
    GetStatus,
    ListRuns,
    RemoteError,
    Submit,
    parse_spec_text,
)

from .conftest import make_repo, wait_state, write_spec

COMMAND_SPEC = 'goal="g"\n[[phases]]\nid="a"\ngoal="x"\nkind="command"\nchecks=["true"]\n'


def _submit(d, tmp_path: Path, repo: Path, checks: list[str], **extra) -> str:
    spec = write_spec(tmp_path / f"s{time.monotonic_ns()}.json",
                      [{"id": "a", "goal": "x", "kind": "command", "checks": checks}], **extra)
    res = d.ctl("submit", str(spec), "--repo", str(repo), "--json")
    assert res.returncode == 0, res.stderr
    return str(json.loads(res.stdout)["run_id"])


def test_logs_after_beyond_64_bits_is_refused_and_the_daemon_serves_on(daemon, repo, tmp_path):
    """Was: ``logs`` with after=2**63 raised OverflowError in the handler and ended the daemon."""
    run_id = _submit(daemon, tmp_path, repo, ["true"])
    with daemon.client() as c:
        for after in (2**63, 2**64 - 1, -1):
            with pytest.raises(RemoteError) as err:
                list(c.stream(Follow(run_id=run_id, after=after)))
            assert err.value.code == ErrorCode.INVALID_REQUEST
            assert "$.after" in err.value.message
        # the same connection still answers
        assert c.request(GetStatus(run_id=run_id)).run_id == run_id
    assert daemon.proc.poll() is None


def test_a_failing_handler_answers_internal_with_an_error_id(daemon_factory, repo, tmp_path):
    d = daemon_factory(env={"AUTOPACK_FAILPOINTS": "request.status=2*panic"})
    run_id = _submit(d, tmp_path, repo, ["true"])
    res = d.ctl("status", run_id)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    match = re.search(r"error id ([0-9a-f]{8})", res.stderr)
    assert match, res.stderr
    # the log has the traceback under the same id
    log = d.log.read_text()
    assert f"[error id {match.group(1)}]" in log
    assert "Traceback" in log
    assert "FailpointPanic" in log
    # health shows the failing part with its last error, the daemon serves on
    h = json.loads(d.ctl("health", "--json").stdout)
    assert h["parts"]["control"] == "degraded"
    assert "status: FailpointPanic" in h["details"]["control"]["last_error"]
    with d.client() as c:
        with pytest.raises(RemoteError) as err:
            c.request(GetStatus(run_id=run_id))  # the second armed failure
        assert err.value.code == ErrorCode.INTERNAL
        assert c.request(GetStatus(run_id=run_id)).run_id == run_id  # and then it works
        assert c.request(GetHealth()).parts["control"] == "ok"
    assert 'autopack_request_errors_total{request="status"} 2.0' in d.http("/metrics")[1]


@pytest.mark.parametrize(("limits", "phase", "needles"), [
    pytest.param({"wall_time_s": "NaN"}, {}, ["limits.wall_time_s: must be a finite number"],
                 id="nan-wall-time"),
    pytest.param({}, {"timeout_s": "NaN"}, ["phases[0].timeout_s: must be a finite number"],
                 id="nan-timeout"),
    pytest.param({"wall_time_s": "Infinity"}, {"timeout_s": "-Infinity"},
                 ["limits.wall_time_s", "phases[0].timeout_s"], id="infinities"),
    pytest.param({"max_output_bytes": 2**62, "check_output_limit_bytes": 2**62}, {},
                 ["limits.max_output_bytes: must be within [1024, 16777216]",
                  "limits.check_output_limit_bytes: must be within"], id="huge-output-limits"),
    pytest.param({"token_budget": 2**70, "max_attempts": -1}, {},
                 ["limits.token_budget", "limits.max_attempts: must be within [1, 100]"],
                 id="beyond-64-bits-and-negative"),
    pytest.param({}, {"scope": ["../**", "/etc/**", "[z-a]", "src/**"]},
                 ["phases[0].scope[0]: must not contain '..'",
                  "phases[0].scope[1]: must be relative",
                  "phases[0].scope[2]: invalid character set [z-a]"], id="scope-patterns"),
])
def test_spec_bounds_refused_with_the_field_named(daemon, repo, tmp_path, limits, phase, needles):
    """Was: NaN stored as null (a poison run), 2^62 output limits took RSS to 1.1 GB, scope
    patterns like ../** accepted silently."""
    phase_json = json.dumps({"id": "a", "goal": "x", "kind": "command", "checks": ["true"],
                             **phase})
    text = f'{{"goal": "g", "limits": {json.dumps(limits)}, "phases": [{phase_json}]}}'
    text = text.replace('"NaN"', "NaN").replace('"Infinity"', "Infinity").replace(
        '"-Infinity"', "-Infinity")
    path = tmp_path / "bad.json"
    path.write_text(text)
    res = daemon.ctl("submit", str(path), "--repo", str(repo))
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert needle in res.stderr, res.stderr
    with daemon.client() as c:
        assert c.request(GetHealth()).runs == {}


def test_daemon_refuses_out_of_bounds_specs_sent_by_any_client(daemon, repo):
    """The daemon does not trust the client's validation: a raw Submit with NaN is refused."""
    spec = parse_spec_text(COMMAND_SPEC, fmt="toml")
    bad_limits = msgspec.structs.replace(spec.limits, wall_time_s=float("nan"))
    bad = msgspec.structs.replace(spec, limits=bad_limits)
    with daemon.client() as c:
        with pytest.raises(RemoteError) as err:
            c.request(Submit(spec=bad, repo=str(repo)))
        assert err.value.code == ErrorCode.INVALID_REQUEST
        assert "$.spec.limits.wall_time_s" in err.value.message
        with pytest.raises(RemoteError) as err:
            c.request(ListRuns(limit=10**6))
        assert "$.limit" in err.value.message
        assert c.request(GetHealth()).runs == {}


def test_stored_spec_that_no_longer_validates_fails_the_run_once(daemon_factory, repo, tmp_path):
    """Was: a NaN timeout stored as null failed re-validation outside the actor's error
    handling: thousands of 'actor crashed' tracebacks, and it survived restarts."""
    d = daemon_factory()
    run_id = _submit(d, tmp_path, repo, ["sleep 60"])
    wait_state(d, run_id, ("running",))
    d.kill9()
    db = sqlite3.connect(d.state_dir / "autopack.db")
    spec = json.loads(db.execute("SELECT spec FROM runs WHERE id=?", (run_id,)).fetchone()[0])
    spec["phases"][0]["timeout_s"] = None  # what an older daemon stored for NaN
    db.execute("UPDATE runs SET spec=? WHERE id=?", (json.dumps(spec), run_id))
    db.commit()
    db.close()
    d.start()
    st = wait_state(d, run_id, timeout=60)
    assert st.state == "failed"
    assert "stored run spec is invalid" in st.reason
    assert "timeout_s" in st.reason
    time.sleep(1.5)
    assert d.log.read_text().count("actor crashed") == 0
    assert d.proc.poll() is None


def test_a_run_whose_actor_keeps_crashing_ends_failed(daemon_factory, repo, tmp_path):
    d = daemon_factory(config={"run_crash_limit": 2},
                       env={"AUTOPACK_FAILPOINTS": "run.execute=panic"})
    run_id = _submit(d, tmp_path, repo, ["true"])
    st = wait_state(d, run_id, timeout=60)
    assert st.state == "failed"
    assert "crashed 2 times in a row" in st.reason
    assert "FailpointPanic" in st.reason
    assert all(p.state == "cancelled" for p in st.phases)
    assert d.log.read_text().count("actor crashed") == 2
    metrics = d.http("/metrics")[1]
    assert "autopack_run_actor_crashes_total 2.0" in metrics


def test_cancel_ends_a_queued_poison_run(daemon_factory, repo, tmp_path):
    """Was: cancel answered 'cancelled' but the crashing run stayed queued."""
    d = daemon_factory(config={"run_crash_limit": 1000},
                       env={"AUTOPACK_FAILPOINTS": "run.execute=panic"})
    run_id = _submit(d, tmp_path, repo, ["true"])
    deadline = time.monotonic() + 30
    while "actor crashed" not in d.log.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    res = d.ctl("cancel", run_id)
    assert res.returncode == 0, res.stderr
    st = wait_state(d, run_id, timeout=10)
    assert st.state == "cancelled"
    crashes = d.log.read_text().count("actor crashed")
    time.sleep(2)
    assert d.log.read_text().count("actor crashed") == crashes  # not restarted any more
    with d.client() as c:
        assert c.request(GetStatus(run_id=run_id)).state == "cancelled"


def test_cancel_ends_a_queued_run_that_waits_for_a_slot(daemon_factory, repo, tmp_path):
    d = daemon_factory(config={"max_concurrent_runs": 1})
    first = _submit(d, tmp_path, repo, ["sleep 30"])
    second = _submit(d, tmp_path, repo, ["true"])
    wait_state(d, first, ("running",))
    assert d.ctl("cancel", second).returncode == 0
    assert wait_state(d, second, timeout=10).state == "cancelled"
    assert d.ctl("cancel", first).returncode == 0
    assert wait_state(d, first, timeout=30).state == "cancelled"


def test_memory_crashing_on_every_request_is_degraded_not_ok(daemon_factory, tmp_path):
    """Was: with every memory request crashing, ``health`` showed memory "ok"."""
    d = daemon_factory(env={"AUTOPACK_FAILPOINTS": "memory.serve=panic"})
    repo = make_repo(tmp_path / "r2")
    for _ in range(3):
        d.ctl("lessons", "--repo", str(repo))
    h = json.loads(d.ctl("health", "--json").stdout)
    assert h["parts"]["memory"] == "degraded", h
    assert "memory" in h["degraded"]
    assert h["details"]["memory"]["restarts"] >= 1
    assert "FailpointPanic" in (h["details"]["memory"]["last_error"] or "")
    assert h["ready"]  # memory is degradable: still ready
    metrics = d.http("/metrics")[1]
    assert 'autopack_part_degraded{part="memory"} 1.0' in metrics
    assert d.proc.poll() is None

"""Durable, isolated execution: kill -9 at distinct points, two daemons, sweeps, limits."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from autopack.protocol import GetStatus, Submit, parse_spec_text

from .conftest import git, wait_state, write_spec


def submit(d, spec: Path, repo: Path) -> str:
    res = d.ctl("submit", str(spec), "--repo", str(repo), "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["run_id"]


def phase_commits(repo: Path, run_id: str) -> list[str]:
    """Subjects of the run branch's commits (one per phase that changed files)."""
    base = git(repo, "rev-parse", "main")
    out = git(repo, "log", "--format=%s", f"{base}..autopack/{run_id}")
    return out.splitlines()[::-1]


def wait_for_file(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


# These checks reach the host on purpose (kill -9 the daemon from a check, pid and marker
# files in the test's /tmp): they test durability, not confinement, so they run unconfined.
# The sandboxed equivalents are in test_sandbox_daemon.py.
HOST_REACHING = {"sandbox": "off"}


def three_phases(tmp_path: Path, marker_dir: Path, kill_in: str | None) -> Path:
    """Phases p1..p3, each writing its own file. In phase ``kill_in`` the check kills
    the daemon (its parent) once, right after writing the file: between check end
    and the phase commit."""
    phases = []
    for i in (1, 2, 3):
        pid = f"p{i}"
        cmd = f"echo {pid} > {pid}.txt"
        if pid == kill_in:
            flag = marker_dir / f"killed-{pid}"
            cmd += f"; if [ ! -e {flag} ]; then touch {flag}; kill -9 $PPID; sleep 5; fi"
        phases.append({"id": pid, "goal": f"write {pid}", "kind": "command", "checks": [cmd]})
    return write_spec(tmp_path / f"spec-{kill_in}.json", phases)


@pytest.mark.parametrize("kill_in", ["p1", "p2", "p3"])
def test_kill9_between_check_end_and_commit_commits_each_phase_once(
        daemon_factory, repo, tmp_path, kill_in):
    d = daemon_factory(config=HOST_REACHING)
    markers = tmp_path / "markers"
    markers.mkdir()
    run_id = submit(d, three_phases(tmp_path, markers, kill_in), repo)
    d.proc.wait(30)  # the check killed the daemon
    assert (markers / f"killed-{kill_in}").exists()
    d.start()
    st = wait_state(d, run_id)
    assert st.state == "succeeded", st
    assert phase_commits(repo, run_id) == ["p1: write p1", "p2: write p2", "p3: write p3"]
    attempts = {p.id: p.attempts for p in st.phases}
    assert attempts[kill_in] == 2  # the interrupted phase started a new attempt
    assert all(n == 1 for pid, n in attempts.items() if pid != kill_in)


def test_kill9_during_a_check_kills_leftovers_and_resumes(daemon_factory, repo, tmp_path):
    d = daemon_factory(config=HOST_REACHING)
    pidfile = tmp_path / "child.pid"
    gate = tmp_path / "first-done"
    spec = write_spec(tmp_path / "s.json", [
        {"id": "first", "goal": "first", "kind": "command", "checks": ["echo 1 > one.txt"]},
        {"id": "slow", "goal": "slow", "kind": "command",
         "checks": [f"if [ ! -e {gate} ]; then touch {gate}; sleep 300 & echo $! > {pidfile}; wait; fi;"
                    " echo 2 > two.txt"]}])
    run_id = submit(d, spec, repo)
    wait_for_file(pidfile)
    time.sleep(0.1)
    leftover = int(pidfile.read_text())
    d.kill9()
    assert Path(f"/proc/{leftover}").exists()  # the orphaned check is still alive
    d.start()
    st = wait_state(d, run_id)
    assert st.state == "succeeded"
    deadline = time.monotonic() + 10
    while Path(f"/proc/{leftover}").exists():
        stat = Path(f"/proc/{leftover}/stat").read_text().split()
        if stat[2] == "Z":
            break
        assert time.monotonic() < deadline, "leftover process of the dead daemon survived"
        time.sleep(0.05)
    assert phase_commits(repo, run_id) == ["first: first", "slow: slow"]
    kinds = [json.loads(line)["kind"] for line in d.ctl("logs", run_id, "--json").stdout.splitlines()]
    assert "leftover_killed" in kinds
    assert kinds.count("phase_succeeded") == 2


def test_kill9_after_commit_before_record_is_not_redone(daemon_factory, repo, tmp_path):
    """The daemon died after committing phase 'b' but before recording it: simulate the
    state dir it leaves (worktree with the commit, phase still 'running')."""
    d = daemon_factory(config=HOST_REACHING)
    runs = tmp_path / "count"
    spec = write_spec(tmp_path / "s.json", [
        {"id": "a", "goal": "a", "kind": "command", "checks": ["echo a > a.txt"]},
        {"id": "b", "goal": "b", "kind": "command",
         "checks": [f"echo x >> {runs}; echo b > b.txt; sleep 300"]}])
    run_id = submit(d, spec, repo)
    wait_for_file(runs)
    d.kill9()
    worktree = d.state_dir / "worktrees" / run_id
    (worktree / "b.txt").write_text("b\n")
    git(worktree, "add", "-A")
    git(worktree, "commit", "-q", "-m", f"b: b\n\nAutopack-Phase: {run_id}/b")
    d.start()
    st = wait_state(d, run_id)
    assert st.state == "succeeded"
    assert runs.read_text().count("x") == 1  # the check was not run again
    assert phase_commits(repo, run_id) == ["a: a", "b: b"]
    recovered = [json.loads(line) for line in d.ctl("logs", run_id, "--json").stdout.splitlines()]
    assert any(e["kind"] == "phase_succeeded" and e["payload"].get("recovered") for e in recovered)


def test_repeated_kills_lose_nothing(daemon_factory, repo, tmp_path):
    d = daemon_factory(config={"max_concurrent_runs": 4})
    spec = write_spec(tmp_path / "s.json", [
        {"id": f"s{i}", "goal": f"step {i}", "kind": "command",
         "checks": [f"echo {i} > f{i}.txt; sleep 0.15"]} for i in range(4)])
    # the default max_attempts (3): each kill that lands mid-phase interrupts an attempt,
    # and an interrupted attempt does not count (on a slow machine all three kills can
    # hit the same phase)
    parsed = parse_spec_text(spec.read_text(), fmt="json")
    with d.client() as c:
        ids = [c.request(Submit(spec=parsed, repo=str(repo))).run_id for _ in range(8)]
    for delay in (0.3, 0.5, 0.4):
        time.sleep(delay)
        d.kill9()
        d.start()
    for run_id in ids:
        st = wait_state(d, run_id, timeout=90)
        assert st.state == "succeeded", st
        assert phase_commits(repo, run_id) == [f"s{i}: step {i}" for i in range(4)]


def test_a_second_daemon_on_the_state_dir_is_refused_and_runs_execute_once(daemon_factory, repo,
                                                                           tmp_path):
    """One state dir, one daemon (issue 13): the second daemon, with its own socket, is
    refused before it touches anything, and every run executes exactly once."""
    a = daemon_factory("shared", config={"max_concurrent_runs": 3, **HOST_REACHING})
    b = daemon_factory("shared-b", start=False, config={"max_concurrent_runs": 3, **HOST_REACHING})
    # same state dir, its own socket
    b.config_path.write_text(a.config_path.read_text().replace(
        f'socket = "{a.socket}"', f'socket = "{tmp_path / "b.sock"}"'))
    b.socket = str(tmp_path / "b.sock")
    b.state_dir = a.state_dir
    with pytest.raises(RuntimeError, match="in use by another autopackd"):
        b.start()
    assert b.proc.returncode == 2
    counter = tmp_path / "executions"
    spec = write_spec(tmp_path / "s.json", [
        {"id": "once", "goal": "count", "kind": "command",
         "checks": ["echo $$ >> " + str(counter) + "; sleep 0.3"]}])
    ids = [submit(a, spec, repo) for _ in range(6)]
    for run_id in ids:
        assert wait_state(a, run_id).state == "succeeded"
    assert len(counter.read_text().split()) == 6  # six runs, six executions: never twice
    with a.client() as c:
        for run_id in ids:
            assert c.request(GetStatus(run_id=run_id)).phases[0].attempts == 1


def test_orphan_worktrees_are_swept_at_startup(daemon_factory, repo, tmp_path):
    d = daemon_factory()
    spec = write_spec(tmp_path / "s.json", [
        {"id": "w", "goal": "w", "kind": "command", "checks": ["true"]}])
    run_id = submit(d, spec, repo)
    assert wait_state(d, run_id).state == "succeeded"
    d.stop()
    stray = d.state_dir / "worktrees" / "no-such-run"
    stray.mkdir(parents=True)
    (stray / "junk.bin").write_bytes(b"x" * 1024)
    # a real git worktree left behind by a run that already ended
    leftover = d.state_dir / "worktrees" / run_id
    git(repo, "worktree", "add", "-q", str(leftover), f"autopack/{run_id}")
    d.start()
    assert not stray.exists()
    assert not leftover.exists()
    assert str(leftover) not in git(repo, "worktree", "list")
    assert git(repo, "rev-parse", "--verify", f"autopack/{run_id}")  # the branch stays


def test_low_disk_refuses_with_clear_reason(daemon_factory, repo, tmp_path):
    d = daemon_factory(config={"min_free_disk_mb": 10**9})
    spec = write_spec(tmp_path / "s.json", [
        {"id": "w", "goal": "w", "kind": "command", "checks": ["true"]}])
    run_id = submit(d, spec, repo)
    st = wait_state(d, run_id)
    assert st.state == "failed"
    assert "not enough free disk" in st.reason
    assert "min_free_disk_mb" in st.reason


def test_limits_end_phases_with_named_reasons(daemon, repo, tmp_path):
    cases = {
        "phase-wall": ({"phase_wall_time_s": 1}, "sleep 30", "phase wall time limit"),
        "run-wall": ({"wall_time_s": 1}, "sleep 30", "wall time limit of 1 s"),
        "output": ({"check_output_limit_bytes": 100000}, "yes autopack", "output limit"),
        "attempts": ({"max_attempts": 1}, "exit 9", "exit 9"),
    }
    ids = {}
    for name, (limits, check, _) in cases.items():
        spec = write_spec(tmp_path / f"{name}.json", [
            {"id": "p", "goal": name, "kind": "command", "checks": [check]}], limits=limits)
        ids[name] = submit(daemon, spec, repo)
    for name, (_, _, needle) in cases.items():
        st = wait_state(daemon, ids[name], timeout=60)
        assert st.state == "failed", (name, st)
        assert needle in st.reason, (name, st.reason)
        logs = daemon.ctl("logs", ids[name])
        assert needle in logs.stdout, (name, logs.stdout)


def test_retention_prunes_old_branches_and_reports(daemon_factory, repo, tmp_path):
    d = daemon_factory(config={"retention_days": 5 / 86400})  # five seconds
    spec = write_spec(tmp_path / "s.json", [
        {"id": "w", "goal": "w", "kind": "command", "checks": ["echo x > x.txt"]}])
    old = submit(d, spec, repo)
    assert wait_state(d, old).state == "succeeded"
    # the report is written just after the run's state turns final: wait for it (bounded)
    deadline = time.monotonic() + 5
    while not (d.state_dir / "reports" / f"{old}.md").exists():
        assert time.monotonic() < deadline, "report of the finished run never written"
        time.sleep(0.05)
    time.sleep(5.5)
    new = submit(d, spec, repo)
    assert wait_state(d, new).state == "succeeded"
    deadline = time.monotonic() + 10
    while (d.state_dir / "reports" / f"{old}.md").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    branches = git(repo, "branch", "--list", "autopack/*")
    assert old not in branches
    assert new in branches
    assert d.ctl("status", old).returncode == 0  # the record itself stays


def test_many_specs_and_wait_summary(daemon, repo, tmp_path):
    ok = write_spec(tmp_path / "ok.json", [{"id": "a", "goal": "a", "kind": "command",
                                            "checks": ["true"]}])
    bad = write_spec(tmp_path / "bad.json", [{"id": "a", "goal": "a", "kind": "command",
                                              "checks": ["false"]}])
    res = daemon.ctl("submit", str(ok), str(bad), str(ok), "--repo", str(repo), "--json")
    assert res.returncode == 0
    ids = json.loads(res.stdout)["run_ids"]
    assert len(ids) == 3
    waited = daemon.ctl("wait", *ids)
    assert waited.returncode == 1  # one failed
    assert "2/3 succeeded" in waited.stdout
    for run_id in ids:
        assert run_id in waited.stdout


def test_run_report_markdown_and_json(daemon, repo, tmp_path):
    spec = write_spec(tmp_path / "s.json", [
        {"id": "a", "goal": "make a", "kind": "command", "checks": ["echo a > a.txt", "true"]},
        {"id": "b", "goal": "fail b", "kind": "command", "checks": ["echo nope; exit 4"]}])
    run_id = submit(daemon, spec, repo)
    wait_state(daemon, run_id)
    data = json.loads(daemon.ctl("report", run_id, "--json").stdout)
    assert set(data) >= {"run_id", "state", "reason", "phases", "tokens", "commits", "totals"}
    assert data["state"] == "failed"
    a, b = data["phases"]
    assert [c["exit_code"] for c in a["checks"]] == [0, 0]
    assert all(c["duration_s"] is not None for c in a["checks"])
    assert b["checks"][0]["exit_code"] == 4
    assert b["failures"]
    assert b["failures"][0]["attempt"] == 1
    assert data["commits"][0]["subject"] == "a: make a"
    md = daemon.ctl("report", run_id)
    assert md.returncode == 1
    assert "| a | succeeded |" in md.stdout
    assert "exit 4" in md.stdout
    saved = daemon.state_dir / "reports" / f"{run_id}.md"
    assert saved.read_text() == md.stdout


def test_sighup_reload_changes_concurrency_live(daemon_factory, repo, tmp_path):
    d = daemon_factory(config={"max_concurrent_runs": 1})
    spec = write_spec(tmp_path / "s.json", [
        {"id": "nap", "goal": "nap", "kind": "command", "checks": ["sleep 60"]}])
    ids = [submit(d, spec, repo) for _ in range(3)]
    time.sleep(0.5)
    with d.client() as c:
        assert sum(c.request(GetStatus(run_id=i)).state == "running" for i in ids) == 1
    text = d.config_path.read_text().replace("max_concurrent_runs = 1", "max_concurrent_runs = 3")
    d.config_path.write_text(text)
    d.proc.send_signal(1)  # SIGHUP
    deadline = time.monotonic() + 20
    with d.client() as c:
        while sum(c.request(GetStatus(run_id=i)).state == "running" for i in ids) < 3:
            assert time.monotonic() < deadline, "reload did not raise the limit"
            time.sleep(0.05)
    for run_id in ids:
        assert d.ctl("cancel", run_id).returncode == 0
    assert "reloaded settings: max_concurrent_runs" in d.log.read_text()


def test_base_is_pinned_at_submit_not_at_start(daemon_factory, repo, tmp_path):
    d = daemon_factory(config={"max_concurrent_runs": 1})
    before = git(repo, "rev-parse", "HEAD")
    slow = write_spec(tmp_path / "slow.json", [
        {"id": "s", "goal": "s", "kind": "command", "checks": ["sleep 4"]}])
    quick = write_spec(tmp_path / "quick.json", [
        {"id": "q", "goal": "q", "kind": "command", "checks": ["echo q > q.txt"]}])
    first = submit(d, slow, repo)
    queued = submit(d, quick, repo)  # waits behind the first
    time.sleep(1.5)  # pinning happens within ~0.1 s of the submit; leave slack for a busy box
    (repo / "later.txt").write_text("committed after the submit\n")
    git(repo, "add", "later.txt")
    git(repo, "commit", "-qm", "later")
    assert wait_state(d, first).state == "succeeded"
    assert wait_state(d, queued).state == "succeeded"
    assert git(repo, "rev-parse", f"autopack/{queued}~1") == before
    tree = git(repo, "ls-tree", "--name-only", f"autopack/{queued}")
    assert "later.txt" not in tree.split()

"""The worktree pool: the next run on a repository starts without a checkout; ended runs'
worktrees are recycled clean; several are kept ready, within the disk budget."""

from __future__ import annotations

import json
import time

from .conftest import git, wait_state, write_spec


def worktree_event(d, run_id):
    for line in d.ctl("logs", run_id, "--json").stdout.splitlines():
        ev = json.loads(line)
        if ev["kind"] == "worktree_ready":
            return ev["payload"]
    raise AssertionError("no worktree_ready event")


def wait_pool_ready(d, timeout=30):
    pool = d.state_dir / "worktrees" / ".pool"
    deadline = time.monotonic() + timeout
    while not list(pool.rglob("*.base")):
        assert time.monotonic() < deadline, "pool never refilled"
        time.sleep(0.05)


def test_second_run_takes_the_pooled_worktree(daemon, repo, tmp_path):
    spec = write_spec(tmp_path / "s.json", [
        {"id": "w", "goal": "write", "kind": "command", "checks": ["echo x > new.txt"]}])
    first = json.loads(daemon.ctl("submit", str(spec), "--repo", str(repo), "--json").stdout)["run_id"]
    assert wait_state(daemon, first).state == "succeeded"
    assert worktree_event(daemon, first)["pooled"] is False
    wait_pool_ready(daemon)
    second = json.loads(daemon.ctl("submit", str(spec), "--repo", str(repo), "--json").stdout)["run_id"]
    assert wait_state(daemon, second).state == "succeeded"
    assert worktree_event(daemon, second)["pooled"] is True
    # the pooled worktree was clean and on the run's own branch: one commit, right content
    assert git(repo, "log", "--format=%s", f"main..autopack/{second}") == "w: write"
    assert git(repo, "show", f"autopack/{second}:new.txt") == "x"
    assert not (daemon.state_dir / "worktrees" / second).exists()


def test_a_pooled_worktree_at_an_older_base_moves_to_the_new_one(daemon, repo, tmp_path):
    spec = write_spec(tmp_path / "s.json", [
        {"id": "r", "goal": "read", "kind": "command", "checks": ["cat README.md"]}])
    first = json.loads(daemon.ctl("submit", str(spec), "--repo", str(repo), "--json").stdout)["run_id"]
    wait_state(daemon, first)
    wait_pool_ready(daemon)
    (repo / "README.md").write_text("# changed\n")
    git(repo, "commit", "-qam", "change")
    second = json.loads(daemon.ctl("submit", str(spec), "--repo", str(repo), "--json").stdout)["run_id"]
    assert wait_state(daemon, second).state == "succeeded"
    assert worktree_event(daemon, second)["pooled"] is True
    assert git(repo, "rev-parse", f"autopack/{second}") == git(repo, "rev-parse", "main")
    # the check ran on the new commit's files, not the pooled entry's
    assert git(repo, "show", f"autopack/{second}:README.md") == "# changed"


def test_an_ended_runs_worktree_is_recycled_clean(daemon, repo, tmp_path):
    (repo / ".gitignore").write_text("build/\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-qm", "ignore build")
    dirty = write_spec(tmp_path / "d.json", [
        {"id": "d", "goal": "dirty", "kind": "command",
         "checks": ["mkdir -p build && echo junk > build/out && echo stray > stray.txt"]}])
    first = json.loads(daemon.ctl("submit", str(dirty), "--repo", str(repo), "--json").stdout)["run_id"]
    assert wait_state(daemon, first).state == "succeeded"
    wait_pool_ready(daemon)
    entries = [p.with_suffix("") for p in (daemon.state_dir / "worktrees" / ".pool").rglob("*.base")]
    assert entries
    for entry in entries:  # nothing of the first run's files is left, tracked or ignored
        assert not (entry / "build").exists()
        assert not (entry / "stray.txt").exists()
        assert git(entry, "status", "--porcelain", "--ignored") == ""
    check = write_spec(tmp_path / "c.json", [
        {"id": "c", "goal": "clean", "kind": "command",
         "checks": ["test ! -e build && test ! -e stray.txt && test -z \"$(git status --porcelain)\""]}])
    second = json.loads(daemon.ctl("submit", str(check), "--repo", str(repo), "--json").stdout)["run_id"]
    assert wait_state(daemon, second).state == "succeeded"
    assert worktree_event(daemon, second)["pooled"] is True


def test_several_worktrees_are_kept_ready_within_the_budget(daemon_factory, repo, tmp_path):
    d = daemon_factory(config={"worktree_pool_size": 3, "max_concurrent_runs": 1})
    spec = write_spec(tmp_path / "s.json", [
        {"id": "r", "goal": "read", "kind": "command", "checks": ["cat README.md"]}])
    first = json.loads(d.ctl("submit", str(spec), "--repo", str(repo), "--json").stdout)["run_id"]
    wait_state(d, first)
    pool = d.state_dir / "worktrees" / ".pool"
    deadline = time.monotonic() + 60
    while len(list(pool.rglob("*.base"))) < 3:
        assert time.monotonic() < deadline, "the pool was not refilled to 3"
        time.sleep(0.05)
    time.sleep(0.5)
    assert len(list(pool.rglob("*.base"))) == 3  # and not past its size
    d.stop()
    # no disk budget: no worktree is kept at all
    d2 = daemon_factory("nobudget", config={"worktree_pool_budget_mb": 0})
    runs = [json.loads(d2.ctl("submit", str(spec), "--repo", str(repo), "--json").stdout)["run_id"]
            for _ in range(2)]
    for run_id in runs:
        assert wait_state(d2, run_id).state == "succeeded"
    time.sleep(0.5)
    assert worktree_event(d2, runs[1])["pooled"] is False
    assert not list((d2.state_dir / "worktrees" / ".pool").rglob("*.base"))

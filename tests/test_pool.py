"""The worktree pool: the next run on a repository starts without a checkout."""

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
    while not list(pool.glob("*.base")):
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


def test_pool_is_skipped_when_the_base_moved(daemon, repo, tmp_path):
    spec = write_spec(tmp_path / "s.json", [
        {"id": "r", "goal": "read", "kind": "command", "checks": ["cat README.md"]}])
    first = json.loads(daemon.ctl("submit", str(spec), "--repo", str(repo), "--json").stdout)["run_id"]
    wait_state(daemon, first)
    wait_pool_ready(daemon)
    (repo / "README.md").write_text("# changed\n")
    git(repo, "commit", "-qam", "change")
    second = json.loads(daemon.ctl("submit", str(spec), "--repo", str(repo), "--json").stdout)["run_id"]
    assert wait_state(daemon, second).state == "succeeded"
    assert worktree_event(daemon, second)["pooled"] is False
    assert git(repo, "rev-parse", f"autopack/{second}") == git(repo, "rev-parse", "main")

"""The one git wrapper and its one GitError: real git on real (broken) repositories, a
real daemon whose run meets a corrupt index mid-run, and the client's submit."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from autopack.actors._drift import changed_files
from autopack.actors._errors import GitError
from autopack.actors._git import git, git_sync
from autopack.actors._worktree import commit_phase

from .conftest import make_repo, wait_state, write_spec

CORRUPT = b"this is no git index, only junk bytes"


def corrupt_index(repo: Path) -> None:
    (repo / ".git" / "index").write_bytes(CORRUPT)


async def test_git_error_carries_command_exit_status_and_last_stderr_line(tmp_path):
    repo = make_repo(tmp_path / "r")
    assert await git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    corrupt_index(repo)
    with pytest.raises(GitError) as info:
        await changed_files(repo)
    err = info.value
    assert err.command[:2] == ("status", "--porcelain=v1")
    assert err.returncode == 128
    assert err.stderr == "fatal: index file corrupt"
    assert str(err).startswith("git status --porcelain=v1 ")
    assert f"failed (exit 128): {err.stderr}" in str(err)
    assert "\n" not in str(err)


async def test_every_wrapper_path_raises_the_one_git_error(tmp_path):
    repo = make_repo(tmp_path / "r")
    corrupt_index(repo)
    with pytest.raises(GitError):
        await commit_phase(repo, "run-1", "p", "goal")
    with pytest.raises(GitError) as info:
        git_sync(repo, "status", "--porcelain")
    assert info.value.returncode == 128
    with pytest.raises(GitError) as info:
        await git(tmp_path, "rev-parse", "--verify", "no-such-ref^{commit}")
    assert info.value.command == ("rev-parse", "--verify", "no-such-ref^{commit}")


def test_a_run_whose_git_fails_ends_with_gits_message(daemon, repo, tmp_path):
    """The test breaks the worktree's index while the run's check waits; the phase commit
    (``git add``) fails, and the run ends failed with git's words, not "internal error"."""
    spec = write_spec(tmp_path / "s.json", [{
        "id": "wait", "goal": "wait for the index to break", "kind": "command",
        "checks": ["for i in $(seq 600); do test -f go && exit 0; sleep 0.05; done; exit 9"]}])
    res = daemon.ctl("submit", str(spec), "--repo", str(repo), "--json")
    assert res.returncode == 0, res.stderr
    run_id = json.loads(res.stdout)["run_id"]
    worktree = daemon.state_dir / "worktrees" / run_id
    deadline = time.monotonic() + 30
    while not (worktree / ".git").is_file():
        assert time.monotonic() < deadline, "worktree never appeared"
        time.sleep(0.05)
    gitdir = Path((worktree / ".git").read_text().split("gitdir: ", 1)[1].strip())
    (gitdir / "index").write_bytes(CORRUPT)
    (worktree / "go").write_text("")
    st = wait_state(daemon, run_id, timeout=60)
    assert st.state == "failed"
    assert "internal error" not in st.reason
    assert st.reason.startswith("git add --all"), st.reason
    assert "failed (exit 128): fatal: " in st.reason
    health = daemon.ctl("health", "--json")
    assert health.returncode == 0  # the daemon keeps serving


def test_submit_against_a_repo_git_cannot_read_is_one_line_exit_2(daemon, tmp_path):
    repo = make_repo(tmp_path / "broken")
    corrupt_index(repo)
    spec = write_spec(tmp_path / "s.json", [{"id": "a", "goal": "g", "kind": "command",
                                              "checks": ["true"]}])
    res = daemon.ctl("submit", str(spec), "--repo", str(repo))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    line = res.stderr.strip()
    assert "\n" not in line
    assert "git status" in line
    assert "(exit 128): fatal: index file corrupt" in line

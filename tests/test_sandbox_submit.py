"""Repository state at submit, through the real autopackctl: uncommitted tracked changes are
refused (named) or, with --include-uncommitted, become the run's base without touching the
user's checkout; --repo may point into a subdirectory."""

from __future__ import annotations

import json

from .conftest import git, make_repo, wait_state, write_spec


def test_uncommitted_changes_are_refused_naming_them(daemon, tmp_path):
    repo = make_repo(tmp_path / "repo", {"a.txt": "one\n", "b.txt": "two\n"})
    (repo / "a.txt").write_text("changed\n")
    (repo / "untracked.txt").write_text("not tracked: not a reason to refuse\n")
    spec = write_spec(tmp_path / "s.json", [{"id": "c", "goal": "c", "kind": "command",
                                             "checks": ["true"]}])
    res = daemon.ctl("submit", str(spec), "--repo", str(repo))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1, res.stderr  # one line, no traceback
    assert "uncommitted changes" in res.stderr
    assert "a.txt" in res.stderr
    assert "--include-uncommitted" in res.stderr
    assert "b.txt" not in res.stderr
    listed = json.loads(daemon.ctl("list", "--json").stdout)
    assert listed["runs"] == []  # nothing was submitted


def test_include_uncommitted_makes_them_the_base_and_leaves_the_checkout(daemon, tmp_path):
    repo = make_repo(tmp_path / "repo", {"a.txt": "one\n", "gone.txt": "x\n", "s.txt": "s\n"})
    (repo / "a.txt").write_text("changed\n")
    (repo / "gone.txt").unlink()
    (repo / "s.txt").write_text("staged\n")
    git(repo, "add", "s.txt")
    head = git(repo, "rev-parse", "HEAD")
    index_before = (repo / ".git" / "index").read_bytes()
    status_before = git(repo, "status", "--porcelain")
    spec = write_spec(tmp_path / "s.json", [{
        "id": "c", "goal": "c", "kind": "command",
        "checks": ["grep -qx changed a.txt && test ! -e gone.txt && grep -qx staged s.txt"]}])
    res = daemon.ctl("submit", str(spec), "--repo", str(repo), "--include-uncommitted", "--json")
    assert res.returncode == 0, res.stderr
    run_id = json.loads(res.stdout)["run_id"]
    st = wait_state(daemon, run_id)
    assert st.state == "succeeded", st
    # the user's checkout, index and HEAD are as they were
    assert git(repo, "rev-parse", "HEAD") == head
    assert (repo / ".git" / "index").read_bytes() == index_before
    assert git(repo, "status", "--porcelain") == status_before
    assert (repo / "a.txt").read_text() == "changed\n"
    # the run's base is a snapshot commit on top of HEAD
    report = json.loads(daemon.ctl("report", run_id, "--json").stdout)
    base = report["base_commit"]
    assert base != head
    assert git(repo, "rev-parse", f"{base}^") == head
    assert git(repo, "show", f"{base}:a.txt") == "changed"


def test_repo_in_a_subdirectory_runs_there(daemon, tmp_path):
    repo = make_repo(tmp_path / "repo", {"README.md": "# r\n", "pkg/sub/marker.txt": "here\n"})
    spec = write_spec(tmp_path / "s.json", [{
        "id": "c", "goal": "c", "kind": "command",
        "checks": ["test -f marker.txt && test \"$(git rev-parse --show-prefix)\" = pkg/sub/"]}])
    res = daemon.ctl("submit", str(spec), "--repo", str(repo / "pkg" / "sub"), "--json")
    assert res.returncode == 0, res.stderr
    run_id = json.loads(res.stdout)["run_id"]
    st = wait_state(daemon, run_id)
    assert st.state == "succeeded", st
    assert st.repo == str(repo)  # the repository's root
    res = daemon.ctl("submit", str(spec), "--repo", str(tmp_path))
    assert res.returncode == 2
    assert "not inside a git repository" in res.stderr

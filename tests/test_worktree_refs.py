"""Reading refs without git must agree with git, or step aside."""

from __future__ import annotations

import pytest
from autopack.actors._worktree import read_ref

from .conftest import git, make_repo


@pytest.fixture
def repo(tmp_path):
    r = make_repo(tmp_path / "r")
    git(r, "checkout", "-q", "-b", "feature/x")
    (r / "f.txt").write_text("x\n")
    git(r, "add", "f.txt")
    git(r, "commit", "-qm", "x")
    git(r, "checkout", "-q", "main")
    return r


def test_agrees_with_git_for_head(repo):
    assert read_ref(repo, "HEAD") == git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "feature/x")
    git(repo, "pack-refs", "--all")  # the branch now lives only in packed-refs
    assert read_ref(repo, "HEAD") == git(repo, "rev-parse", "feature/x")
    git(repo, "checkout", "-q", "--detach", "main")
    assert read_ref(repo, "HEAD") == git(repo, "rev-parse", "main")


@pytest.mark.parametrize("name", ["HEAD~1", "v1.0", "main", "main^{commit}", "no-such-branch"])
def test_steps_aside_when_unsure(repo, name):
    git(repo, "tag", "v1.0")
    assert read_ref(repo, name) is None

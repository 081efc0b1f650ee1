"""Drift: scope globs (pure table) and changed/revert on real git repositories."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from autopack.actors._drift import changed_files, in_scope, outside_scope, revert_paths


@pytest.mark.parametrize(
    ("path", "globs", "allowed"),
    [
        pytest.param("src/api/app.py", ["src/api/**"], True, id="double-star-under"),
        pytest.param("src/api/v1/deep/x.py", ["src/api/**"], True, id="double-star-deep"),
        pytest.param("src/apix/app.py", ["src/api/**"], False, id="prefix-is-not-a-dir"),
        pytest.param("src/db.py", ["src/api/**"], False, id="sibling-outside"),
        pytest.param("README.md", ["*.md"], True, id="basename-glob-top"),
        pytest.param("docs/guide/intro.md", ["*.md"], True, id="basename-glob-any-depth"),
        pytest.param("docs/intro.rst", ["*.md"], False, id="basename-glob-other-ext"),
        pytest.param("docs/a/b.txt", ["docs"], True, id="dir-name-covers-below"),
        pytest.param("docs/a/b.txt", ["docs/"], True, id="dir-slash-covers-below"),
        pytest.param("tests/test_x.py", ["**/test_*.py"], True, id="leading-double-star-top"),
        pytest.param("a/b/tests/test_x.py", ["**/test_*.py"], True, id="leading-double-star-deep"),
        pytest.param("src/a.py", ["src/*.py"], True, id="single-star-one-level"),
        pytest.param("src/x/a.py", ["src/*.py"], False, id="single-star-not-deeper"),
        pytest.param("src/a1.py", ["src/a?.py"], True, id="question-mark"),
        pytest.param("src/ab.py", ["src/a[0-9].py"], False, id="char-class-miss"),
        pytest.param("anything/at/all", [], True, id="empty-scope-allows-all"),
        pytest.param("src/api/x.py", ["./src/api/**"], True, id="dot-slash-prefix"),
        pytest.param("pyproject.toml", ["src/**", "tests/**"], False, id="several-globs-miss"),
    ],
)
def test_scope_globs(path: str, globs: list[str], allowed: bool) -> None:
    assert in_scope(path, globs) is allowed


def test_outside_scope_sorted_unique() -> None:
    files = ["z.txt", "src/api/a.py", "setup.cfg", "z.txt"]
    assert outside_scope(files, ["src/api/**"]) == ["setup.cfg", "z.txt"]
    assert outside_scope(files, []) == []


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.invalid")
    git(repo, "config", "user.name", "t")
    (repo / "src").mkdir()
    (repo / "src" / "api.py").write_text("api = 1\n")
    (repo / "setup.cfg").write_text("[x]\n")
    (repo / "old.txt").write_text("old\n")
    (repo / "gone.txt").write_text("gone\n")
    (repo / ".gitignore").write_text("*.log\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    return repo


async def test_changed_files_and_revert(repo: Path) -> None:
    (repo / "src" / "api.py").write_text("api = 2\n")  # in scope
    (repo / "setup.cfg").write_text("[changed]\n")  # modified, out of scope
    (repo / "gone.txt").unlink()  # deleted, out of scope
    git(repo, "mv", "old.txt", "renamed.txt")  # rename: both names
    (repo / "new" / "deep").mkdir(parents=True)
    (repo / "new" / "deep" / "file.py").write_text("x\n")  # untracked, in a new dir
    (repo / "staged.txt").write_text("s\n")
    git(repo, "add", "staged.txt")  # added to the index, not in HEAD
    (repo / "debug.log").write_text("ignored\n")

    changed = await changed_files(repo)
    assert changed == ["gone.txt", "new/deep/file.py", "old.txt", "renamed.txt", "setup.cfg",
                       "src/api.py", "staged.txt"]
    drift = outside_scope(changed, ["src/**"])
    assert "src/api.py" not in drift

    await revert_paths(repo, drift)
    assert await changed_files(repo) == ["src/api.py"]
    assert (repo / "setup.cfg").read_text() == "[x]\n"
    assert (repo / "gone.txt").read_text() == "gone\n"
    assert (repo / "old.txt").exists()
    assert not (repo / "renamed.txt").exists()
    assert not (repo / "new").exists()  # emptied directories pruned
    assert (repo / "debug.log").exists()  # ignored files are not drift
    assert (repo / "src" / "api.py").read_text() == "api = 2\n"


async def test_installed_node_modules_is_not_drift(repo: Path) -> None:
    """A node_modules the install step put in the worktree (not gitignored here) is neither a
    change nor drift: reverting it would delete what the checks need."""
    for where in ("node_modules/left-pad", "web/node_modules/.bin"):
        (repo / where).mkdir(parents=True)
        (repo / where / "index.js").write_text("module.exports = 1\n")
    (repo / "web" / "app.js").write_text("x\n")
    assert await changed_files(repo) == ["web/app.js"]
    assert (repo / "node_modules" / "left-pad" / "index.js").exists()


async def test_revert_ignores_paths_leaving_the_worktree(repo: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep\n")
    assert await revert_paths(repo, ["../victim.txt", str(victim), ".git/config"]) == []
    assert victim.read_text() == "keep\n"
    assert (repo / ".git" / "config").exists()

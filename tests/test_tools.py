"""The Builder's tools on real files and real subprocesses: editing, confinement, bash bounds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from autopack.actors._tools import PathRefused, Tools, confine, run_command

EDIT = "str_replace_based_edit_tool"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    wt = tmp_path / "wt"
    (wt / "src" / "pkg" / "deep").mkdir(parents=True)
    (wt / "src" / "app.py").write_text("a = 1\nb = 2\nc = 3\n")
    (wt / ".git").write_text("gitdir: elsewhere\n")
    (wt / "src" / "pkg" / "deep" / "x.txt").write_text("x")
    (tmp_path / "secret.txt").write_text("top secret\n")
    return wt


def tools_for(wt: Path) -> Tools:
    return Tools(wt, {"PATH": os.environ["PATH"]}, command_timeout_s=5)


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        pytest.param("src/app.py", True, id="relative-inside"),
        pytest.param("src/../src/app.py", True, id="dotdot-staying-inside"),
        pytest.param("new/file.py", True, id="not-yet-existing"),
        pytest.param("../secret.txt", False, id="dotdot-escape"),
        pytest.param("src/../../secret.txt", False, id="nested-dotdot-escape"),
        pytest.param("/etc/passwd", False, id="absolute-outside"),
        pytest.param(".git", False, id="dot-git-file"),
        pytest.param(".git/config", False, id="inside-dot-git"),
        pytest.param("", False, id="empty"),
    ],
)
def test_confine_table(tree: Path, path: str, ok: bool) -> None:
    if ok:
        assert confine(tree, path).is_relative_to(tree.resolve())
    else:
        with pytest.raises(PathRefused):
            confine(tree, path)


def test_confine_absolute_inside_is_accepted(tree: Path) -> None:
    assert confine(tree, str(tree / "src" / "app.py")) == (tree / "src" / "app.py").resolve()


def test_symlinks_out_are_refused(tree: Path, tmp_path: Path) -> None:
    (tree / "root_link").symlink_to("/")
    (tree / "hop1").symlink_to(tree / "hop2")
    (tree / "hop2").symlink_to(tmp_path / "secret.txt")  # a chain that ends outside
    (tree / "inner").symlink_to(tree / "src")  # a link that stays inside is fine
    for path in ("root_link/etc/passwd", "hop1", "hop2"):
        with pytest.raises(PathRefused):
            confine(tree, path)
    assert confine(tree, "inner/app.py") == (tree / "src" / "app.py").resolve()


async def test_refused_calls_never_touch_the_file(tree: Path, tmp_path: Path) -> None:
    (tree / "out").symlink_to(tmp_path / "secret.txt")
    tools = tools_for(tree)
    attempts = [
        {"command": "create", "path": "../secret.txt", "file_text": "pwned"},
        {"command": "create", "path": "out", "file_text": "pwned"},
        {"command": "str_replace", "path": str(tmp_path / "secret.txt"), "old_str": "top",
         "new_str": "pwned"},
        {"command": "insert", "path": "out", "insert_line": 0, "insert_text": "pwned"},
        {"command": "view", "path": "/etc/passwd"},
    ]
    for attempt in attempts:
        result = await tools.run(EDIT, attempt)
        assert result.is_error, attempt
        assert "outside the worktree" in result.content
    assert (tmp_path / "secret.txt").read_text() == "top secret\n"
    assert tools.refused == len(attempts)


async def test_editor_create_view_replace_insert(tree: Path) -> None:
    tools = tools_for(tree)
    created = await tools.run(EDIT, {"command": "create", "path": "pkg2/mod.py",
                                     "file_text": "def f():\n    return 1\n"})
    assert not created.is_error
    assert (tree / "pkg2" / "mod.py").read_text() == "def f():\n    return 1\n"

    view = await tools.run(EDIT, {"command": "view", "path": "src/app.py", "view_range": [2, -1]})
    assert view.content.splitlines() == ["     2\tb = 2", "     3\tc = 3", "     4\t"]

    replaced = await tools.run(EDIT, {"command": "str_replace", "path": "src/app.py",
                                      "old_str": "b = 2", "new_str": "b = 20"})
    assert not replaced.is_error
    inserted = await tools.run(EDIT, {"command": "insert", "path": "src/app.py", "insert_line": 0,
                                      "insert_text": "import os"})
    assert not inserted.is_error
    assert (tree / "src" / "app.py").read_text() == "import os\na = 1\nb = 20\nc = 3\n"


async def test_str_replace_must_match_exactly_once(tree: Path) -> None:
    tools = tools_for(tree)
    (tree / "dup.py").write_text("x = 1\nx = 1\n")
    twice = await tools.run(EDIT, {"command": "str_replace", "path": "dup.py", "old_str": "x = 1",
                                   "new_str": "y"})
    assert twice.is_error
    assert "2 times" in twice.content
    assert "[1, 2]" in twice.content
    missing = await tools.run(EDIT, {"command": "str_replace", "path": "dup.py", "old_str": "zzz",
                                     "new_str": "y"})
    assert missing.is_error
    assert (tree / "dup.py").read_text() == "x = 1\nx = 1\n"


async def test_view_directory_lists_two_levels_without_hidden(tree: Path) -> None:
    listing = (await tools_for(tree).run(EDIT, {"command": "view", "path": "."})).content
    assert "src/app.py" in listing
    assert "src/pkg" in listing
    assert "src/pkg/deep" not in listing  # third level
    assert ".git" not in listing


async def test_bad_inputs_are_error_results(tree: Path) -> None:
    tools = tools_for(tree)
    assert (await tools.run(EDIT, {"command": "undo_edit", "path": "src/app.py"})).is_error
    assert (await tools.run(EDIT, {"command": "view", "path": "src/app.py",
                                   "view_range": [9, 10]})).is_error
    assert (await tools.run(EDIT, {"command": "str_replace", "path": "nope.py",
                                   "old_str": "a", "new_str": "b"})).is_error
    assert (await tools.run("computer", {"action": "screenshot"})).is_error
    assert (await tools.run("bash", {})).is_error


async def test_bash_runs_in_worktree_with_given_env(tree: Path) -> None:
    tools = Tools(tree, {"PATH": os.environ["PATH"], "MARK": "run-env"}, command_timeout_s=5)
    result = await tools.run("bash", {"command": "pwd; echo $MARK; echo err >&2; exit 3"})
    lines = result.content.splitlines()
    assert lines[0] == os.path.realpath(tree)  # noqa: ASYNC240
    assert "run-env" in lines
    assert "err" in lines
    assert "[exit status 3]" in result.content
    assert (await tools.run("bash", {"restart": True})).content == "tool has been restarted."


async def test_bash_timeout_kills_the_process_group(tree: Path) -> None:
    pidfile = tree / "child.pid"
    result = await run_command(f"sleep 30 & echo $! > {pidfile}; wait", cwd=tree,
                               env={"PATH": os.environ["PATH"]}, timeout_s=0.5)
    assert result.timed_out
    assert result.exit_code == 124
    child = int(pidfile.read_text())
    for _ in range(200):  # SIGKILL is sent synchronously; the exit itself may lag a moment
        if not _alive(child):
            break
        await trio.sleep(0.01)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_bash_output_is_bounded_head_and_tail(tree: Path) -> None:
    result = await run_command("seq 1 100000", cwd=tree, env={"PATH": os.environ["PATH"]},
                               timeout_s=10, max_output=2000)
    assert result.truncated
    assert result.exit_code == 0
    assert result.output.startswith("1\n2\n")
    assert result.output.rstrip().endswith("100000")
    assert len(result.output) < 2200


async def test_background_child_holding_stdout_does_not_hang(tree: Path) -> None:
    result = await run_command("(sleep 30) & echo started", cwd=tree,
                               env={"PATH": os.environ["PATH"]}, timeout_s=10)
    assert not result.timed_out
    assert result.exit_code == 0
    assert result.output.strip() == "started"


async def test_editor_paths_start_where_bash_starts_with_a_workdir(tree: Path) -> None:
    """A spec's ``workdir``: bash starts there, so relative editor paths do too; the
    confinement stays the worktree (a sibling is reachable, the outside is not)."""
    tools = Tools(tree, {"PATH": os.environ["PATH"]}, command_timeout_s=5, cwd=tree / "src")
    listed = await tools.run("bash", {"command": "ls"})
    assert "app.py" in listed.content
    viewed = await tools.run(EDIT, {"command": "view", "path": "app.py"})
    assert not viewed.is_error
    assert "a = 1" in viewed.content
    created = await tools.run(EDIT, {"command": "create", "path": "mod.py", "file_text": "m = 1\n"})
    assert created.content == "File created successfully at: mod.py"
    assert (tree / "src" / "mod.py").read_text() == "m = 1\n"
    assert not (tree / "mod.py").exists()
    shown = await tools.run("bash", {"command": "cat mod.py"})
    assert shown.content.strip() == "m = 1"
    up = await tools.run(EDIT, {"command": "view", "path": "../src/pkg/deep/x.txt"})
    assert not up.is_error
    for bad in ("../../secret.txt", "../.git", "/etc/passwd"):
        res = await tools.run(EDIT, {"command": "view", "path": bad})
        assert res.is_error, bad
        assert res.content.startswith("refused"), bad
    absolute = await tools.run(EDIT, {"command": "view", "path": str(tree / "src" / "app.py")})
    assert not absolute.is_error
    assert confine(tree, "app.py", tree / "src") == (tree / "src" / "app.py").resolve()

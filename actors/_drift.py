"""Drift check: which files did an attempt change, which are outside the phase's scope, revert them.

``outside_scope`` is pure. Scope globs, relative to the repository root:

- ``*`` matches within one path segment, ``?`` one character, ``[...]`` a set;
- ``**`` matches any number of segments (``src/api/**``, ``**/test_*.py``);
- a glob with a ``/`` is anchored at the root; one without (``*.md``) matches
  the file name at any depth, like ``.gitignore``;
- a glob also covers everything below a directory it names (``docs`` = ``docs/**``).

An empty scope allows everything.

``changed_files`` and ``revert_paths`` run ``git`` as async subprocesses.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import anyio

from ._errors import GitError as GitError  # raised by changed_files, revert_paths, edits_since
from ._git import git_bytes
from ._worktree import NO_NODE_MODULES


@functools.lru_cache(maxsize=512)
def glob_regex(glob: str) -> re.Pattern[str]:
    """Compile one scope glob (see the module docstring) to a full-match regex."""
    pattern = glob.strip()
    while pattern.startswith("./"):
        pattern = pattern[2:]
    pattern = pattern.lstrip("/")
    if pattern.endswith("/"):
        pattern += "**"
    anchored = "/" in pattern
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            close = pattern.find("]", i + 2)
            if close == -1:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1:close].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = close + 1
        else:
            out.append(re.escape(c))
            i += 1
    prefix = "" if anchored else "(?:.*/)?"
    return re.compile(f"{prefix}{''.join(out)}(?:/.*)?")


def in_scope(path: str, scope_globs: Sequence[str]) -> bool:
    """Whether ``path`` (repo-relative, ``/``-separated) is allowed by ``scope_globs``."""
    if not scope_globs:
        return True
    return any(glob_regex(g).fullmatch(path) for g in scope_globs if g.strip())


def outside_scope(files: Iterable[str], scope_globs: Sequence[str]) -> list[str]:
    """The files that no scope glob allows, sorted. Empty scope: none."""
    return sorted({f for f in files if not in_scope(f, scope_globs)})


async def changed_files(worktree: Path) -> list[str]:
    """Files changed in the worktree against HEAD (modified, added, deleted, renamed — both
    names — and untracked, each file listed, ignored files excluded), sorted."""
    # an installed node_modules (cloned in by the install step) is never part of the change
    out = await git_bytes(worktree, "status", "--porcelain=v1", "-z", "--untracked-files=all",
                          "--", ".", NO_NODE_MODULES)
    fields = out.decode("utf-8", "surrogateescape").split("\0")
    files: set[str] = set()
    i = 0
    while i < len(fields):
        entry = fields[i]
        i += 1
        if len(entry) < 4:
            continue
        status, path = entry[:2], entry[3:]
        files.add(path)
        if "R" in status or "C" in status:  # the original name follows as its own field
            if i < len(fields) and fields[i]:
                files.add(fields[i])
            i += 1
    return sorted(files)


async def revert_paths(worktree: Path, paths: Sequence[str]) -> list[str]:
    """Put ``paths`` back as they are in HEAD: tracked files are restored (content and index),
    files HEAD does not have are removed (and dropped from the index). Returns the paths
    handled. Paths that would leave the worktree are ignored."""
    root = Path(await anyio.Path(worktree).resolve())
    safe = [p for p in paths if _inside(root, p)]
    if not safe:
        return []
    listed = await git_bytes(worktree, "ls-tree", "-r", "-z", "--name-only", "HEAD", "--", *safe)
    in_head = set(listed.decode("utf-8", "surrogateescape").split("\0")) - {""}
    tracked = [p for p in safe if p in in_head]
    new = [p for p in safe if p not in in_head]
    if tracked:
        await git_bytes(worktree, "checkout", "HEAD", "--", *tracked)
    if new:
        await git_bytes(worktree, "rm", "-q", "--cached", "--ignore-unmatch", "-r", "--", *new)
        await anyio.to_thread.run_sync(_remove_files, root, new)
    return sorted(safe)


def _remove_files(root: Path, rels: Sequence[str]) -> None:
    for rel in rels:
        target = root / rel
        if target.is_symlink() or target.is_file():
            target.unlink()  # a link itself, never what it points to
        _prune_empty_parents(root, target.parent)


def _inside(root: Path, rel: str) -> bool:
    if os.path.isabs(rel) or ".." in Path(rel).parts or not rel:
        return False
    parts = Path(rel).parts
    return parts[0] != ".git"


def _prune_empty_parents(root: Path, directory: Path) -> None:
    while directory != root and directory.is_relative_to(root):
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


DIFF_LIMIT = 64 * 1024


async def edits_since(worktree: Path, since_tree: str | None,
                      limit: int = DIFF_LIMIT) -> dict[str, object]:
    """What the worktree holds now against ``since_tree`` (the previous attempt's snapshot;
    ``None``: HEAD): ``{"tree", "diff", "files", "added", "removed", "bytes", "truncated"}``.

    The snapshot is a git tree written through a throw-away index, so the worktree's own
    index is untouched; the diff (unified, no colour) is cut at ``limit`` bytes. Costs one
    ``git add`` of the changed files, no copy of the worktree.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="autopack-idx-") as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}

        async def git(*args: str) -> bytes:
            return await git_bytes(worktree, *args, env=env)

        await git("read-tree", "HEAD")
        await git("add", "--all", "--", ".", NO_NODE_MODULES)
        tree = (await git("write-tree")).decode().strip()
        base = since_tree or "HEAD"
        numstat = (await git("diff", "--numstat", base, tree)).decode("utf-8", "replace")
        diff = await git("diff", "--no-color", "--no-ext-diff", base, tree)
    added = removed = 0
    files = []
    for line in numstat.splitlines():
        a, _, rest = line.partition("\t")
        r, _, name = rest.partition("\t")
        files.append(name)
        added += int(a) if a.isdigit() else 0
        removed += int(r) if r.isdigit() else 0
    text = diff[:limit].decode("utf-8", "replace")
    return {"tree": tree, "diff": text, "files": files[:200], "added": added,
            "removed": removed, "bytes": len(diff), "truncated": len(diff) > limit}

"""The repository a run is submitted against, as ``autopackctl submit`` sees it.

* ``--repo`` may name a subdirectory: the run gets the repository's root and
  that subdirectory as its phases' working directory (spec ``workdir``).
* Uncommitted changes to tracked files would be silently left out of a run
  that branches from ``HEAD``: submit refuses, naming them, unless
  ``--include-uncommitted``, which snapshots them into a commit made through a
  temporary index (``GIT_INDEX_FILE``) — the user's checkout, index and refs
  are untouched — and uses that commit as the run's base.

Plain blocking ``git`` processes through :func:`autopack.actors._git.git_sync` (the
daemon's git wrapper, which imports no trio): hooks are off for every one of them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping

import msgspec
from autopack.actors._git import GitError, git_sync
from autopack.protocol import RunSpec

from ._errors import CtlError


def _git(cwd: str, *args: str, env: Mapping[str, str] | None = None) -> str:
    try:
        return git_sync(cwd, *args, env=env)
    except (GitError, OSError) as exc:
        raise CtlError(f"{exc} (in {cwd})") from None


def prepare(path: str, spec: RunSpec, *, include_uncommitted: bool) -> tuple[str, RunSpec]:
    """``(repository root, spec)`` for a submit against ``path``. Raises :class:`CtlError`
    (one line) for a path outside any repository or for uncommitted tracked changes."""
    if not os.path.isdir(path):
        raise CtlError(f"{path}: not a directory")
    try:
        root = _git(path, "rev-parse", "--show-toplevel").strip()
        prefix = _git(path, "rev-parse", "--show-prefix").strip().rstrip("/")
    except CtlError:
        raise CtlError(f"{path} is not inside a git repository") from None
    if prefix and not spec.workdir:
        spec = msgspec.structs.replace(spec, workdir=prefix)
    if spec.base != "HEAD":
        return root, spec  # the checkout's state does not matter for another ref
    changed = _changed(root)
    if not changed:
        return root, spec
    if not include_uncommitted:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise CtlError(f"{root} has uncommitted changes to tracked files ({shown}); commit them, "
                       "or submit with --include-uncommitted to make them the run's base")
    return root, msgspec.structs.replace(spec, base=snapshot(root))


def _changed(root: str) -> list[str]:
    out = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=no")
    names = []
    entries = out.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        names.append(entry[3:])
        if entry[0] in "RC":  # a rename/copy carries its source as the next entry
            i += 1
    return names


def snapshot(root: str) -> str:
    """A commit of ``HEAD`` plus the working tree's tracked changes (staged or not), made
    through a temporary index; returns its sha. Nothing of the user's checkout changes:
    not the index, not a ref, not a file (the commit is reachable from no branch)."""
    with tempfile.TemporaryDirectory(prefix="autopack-index-") as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        _git(root, "read-tree", "HEAD", env=env)
        _git(root, "add", "--update", "--", ".", env=env)
        tree = _git(root, "write-tree", env=env).strip()
        head = _git(root, "rev-parse", "HEAD").strip()
        message = "autopack: uncommitted changes included at submit"
        return _git(root, "commit-tree", tree, "-p", head, "-m", message, env=env).strip()

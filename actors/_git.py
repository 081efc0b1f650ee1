"""The one way autopack runs ``git``: in the daemon (worktrees, drift, pool, diffs,
retention) and in ``autopackctl`` (submit's repository checks).

Every invocation gets the same hardening — no hooks (a run could have planted one in a
repository it can reach), no fsmonitor command, no pager, no terminal prompt, the C
locale, autopack's commit identity and none of the caller's ``GIT_*`` variables — and a
failure raises the one :class:`~autopack.actors._errors.GitError`, which carries the
command, its exit status and the last line git wrote to stderr.

This module imports no trio and no anyio at import time (the client uses
:func:`git_sync`); the async functions import anyio when first called.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from ._errors import GitError

__all__ = ["GIT_IDENTITY", "SAFE_GIT", "GitError", "git", "git_bytes", "git_env",
           "git_process", "git_sync"]

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "autopack",
    "GIT_AUTHOR_EMAIL": "autopack@localhost",
    "GIT_COMMITTER_NAME": "autopack",
    "GIT_COMMITTER_EMAIL": "autopack@localhost",
}

#: On every git command: no hooks, no fsmonitor command, no pager.
SAFE_GIT = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "--no-pager")


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a git process: ours without ``GIT_*``, plus the identity, no
    prompt, the C locale (git's messages are parsed and shown), then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_IDENTITY)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"
    if extra:
        env.update(extra)
    return env


def _checked(args: tuple[str, ...], proc: subprocess.CompletedProcess[bytes]) -> bytes:
    if proc.returncode != 0:
        raise GitError(args, proc.returncode, proc.stderr or proc.stdout)
    return bytes(proc.stdout)


async def git_process(cwd: Path | str, *args: str,
                      env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``git <SAFE_GIT> args`` in ``cwd`` and return the finished process, never
    raising for a non-zero exit (the caller looks at ``returncode``). ``env`` adds
    variables (``GIT_INDEX_FILE``) to :func:`git_env`. Raises ``OSError`` when git
    cannot be started or ``cwd`` is not a directory."""
    import anyio  # not at import time: autopackctl imports this module

    return await anyio.run_process(["git", *SAFE_GIT, *args], cwd=str(cwd), env=git_env(env),
                                   check=False, stdin=subprocess.DEVNULL)


async def git_bytes(cwd: Path | str, *args: str, env: Mapping[str, str] | None = None) -> bytes:
    """``git args`` in ``cwd``; its stdout as bytes. Raises :class:`GitError` on a
    non-zero exit."""
    return _checked(args, await git_process(cwd, *args, env=env))


async def git(cwd: Path | str, *args: str, env: Mapping[str, str] | None = None) -> str:
    """``git args`` in ``cwd``; its stdout decoded and stripped. Raises :class:`GitError`
    on a non-zero exit."""
    return (await git_bytes(cwd, *args, env=env)).decode("utf-8", "replace").strip()


def git_sync(cwd: Path | str, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Blocking :func:`git` for the client: stdout decoded (not stripped: ``-z`` output
    keeps its separators). Raises :class:`GitError` on a non-zero exit, ``OSError`` when
    git cannot be started."""
    proc = subprocess.run(["git", *SAFE_GIT, *args], cwd=str(cwd), env=git_env(env),
                          capture_output=True, check=False, stdin=subprocess.DEVNULL)
    return _checked(args, proc).decode("utf-8", "surrogateescape")

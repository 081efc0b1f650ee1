"""Exceptions of the actors.

Hierarchy::

    AutopackError (autopack.protocol)
    └── GitError                  a git command failed: the run fails with its message

A "bug in autopack" is any other exception.
"""

from __future__ import annotations

from autopack.protocol import AutopackError


class GitError(AutopackError):
    """Raised by every function of :mod:`autopack.actors._git` (worktrees, drift check,
    pool, diffs) when git exits non-zero. ``command`` is git's arguments (without the
    hardening options), ``returncode`` its exit status, ``stderr`` the last non-empty line
    it wrote (``fatal: …``). A run that meets one ends failed with this message."""

    def __init__(self, command: tuple[str, ...] | list[str], returncode: int,
                 stderr: bytes | str = b"") -> None:
        self.command = tuple(command)
        self.returncode = returncode
        text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        self.stderr = lines[-1][:500] if lines else ""
        shown = " ".join(self.command)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"git {shown} failed (exit {returncode})"
                         + (f": {self.stderr}" if self.stderr else ""))

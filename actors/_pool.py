"""A small pool of ready worktrees per repository, so a run starts without a checkout.

Checking out a large repository is most of a run's start-up cost (5,000 files:
~70 ms on tmpfs, ~600 ms on a busy disk). The pool keeps one detached worktree
per repository, checked out at the base commit the last run used. A new run
with the same base *moves* it into place (``git worktree move``, a rename) and
creates its branch there; a run with another base falls back to a normal
checkout. Entries are refilled after a run ends, off the start-up path.

Layout: ``<state>/worktrees/.pool/<key>/`` with the base sha in ``<key>.base``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import anyio

from ._worktree import GitError, git

LOGGER = logging.getLogger(__name__)


def repo_key(repo: Path) -> str:
    return hashlib.sha256(str(repo).encode()).hexdigest()[:16]


class WorktreePool:
    def __init__(self, root: Path, *, enabled: bool = True) -> None:
        self.root = root
        self.enabled = enabled
        self.hits = 0
        self.misses = 0
        self._refilling: set[Path] = set()  # one refill per repository at a time

    def _entry(self, repo: Path) -> tuple[Path, Path]:
        key = repo_key(repo)
        return self.root / key, self.root / f"{key}.base"

    async def take(self, repo: Path, base_sha: str, dest: Path, branch: str,
                   lock: anyio.Lock) -> bool:
        """Move a ready worktree of ``repo`` at ``base_sha`` to ``dest`` on a new ``branch``.

        Returns ``False`` (and changes nothing) when there is none to take.
        """
        if not self.enabled:
            return False
        entry, base_file = self._entry(repo)
        try:
            ready = (await anyio.Path(base_file).read_text()).strip() == base_sha
        except OSError:
            ready = False
        if not ready or not await anyio.Path(entry / ".git").exists():
            self.misses += 1
            return False
        try:
            async with lock:
                await anyio.Path(base_file).unlink(missing_ok=True)
                await git(repo, "worktree", "move", str(entry), str(dest))
            await git(dest, "switch", "--quiet", "--create", branch)
        except (GitError, OSError) as exc:
            LOGGER.warning("worktree pool entry for %s unusable (%s); checking out instead",
                           repo, exc)
            self.misses += 1
            return False
        self.hits += 1
        return True

    async def refill(self, repo: Path, base_sha: str, lock: anyio.Lock) -> None:
        """Prepare a worktree of ``repo`` at ``base_sha`` for the next run (if none is ready)."""
        if not self.enabled:
            return
        entry, base_file = self._entry(repo)
        if repo in self._refilling or await anyio.Path(base_file).exists():
            return
        self._refilling.add(repo)
        await anyio.Path(self.root).mkdir(parents=True, exist_ok=True)
        try:
            async with lock:
                if await anyio.Path(entry).exists():
                    await git(repo, "worktree", "remove", "--force", "--force", str(entry))
                await git(repo, "worktree", "add", "--quiet", "--no-checkout", "--detach",
                          str(entry), base_sha)
            # the checkout happens outside the repository lock: the entry is ours alone
            await git(entry, "reset", "--quiet", "--hard", base_sha)
            await anyio.Path(base_file).write_text(base_sha + "\n")
        except (GitError, OSError) as exc:
            LOGGER.warning("could not refill the worktree pool for %s: %s", repo, exc)
        finally:
            self._refilling.discard(repo)

    async def drop(self, repo: Path, lock: anyio.Lock) -> None:
        entry, base_file = self._entry(repo)
        await anyio.Path(base_file).unlink(missing_ok=True)
        if await anyio.Path(entry).exists():
            async with lock:
                try:
                    await git(repo, "worktree", "remove", "--force", "--force", str(entry))
                except GitError:
                    pass

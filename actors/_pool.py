"""Ready worktrees per repository, so a run starts without a checkout.

Theory of operation
-------------------
Checking out a large repository is most of a run's start-up cost (5,000 files:
~70 ms on tmpfs, 0.1–4 s on a busy disk). The pool keeps up to ``per_repo``
detached, clean worktrees of each busy repository, ready to be taken:

* **take** (on the start path, never waits for a refill): claim a ready entry —
  at the run's base if there is one, else any — with no await between the choice
  and the claim, *move* it into place (``git worktree move``, a rename) and create
  the run's branch there (``git switch --create``; only files that differ between
  the entry's commit and the base are written). Nothing ready: the caller checks
  out as usual, which costs what ``git worktree add`` costs.
* **recycle** (when a run ends): its worktree goes back into the pool instead of
  being deleted — moved, detached at the base (``checkout --force``) and cleaned
  of every untracked and ignored file (``clean -ffdx``): a few files rewritten
  instead of 5,000 deleted and 5,000 written for the next run.
* **refill** (after a start): fresh checkouts, several at once (``parallel``),
  until the repository has ``per_repo`` worktrees ready, on the way back, or
  held by runs that will return them; never past the disk budget.

Every entry counts against ``budget_bytes`` (its checked-out size, measured once
per repository). An entry is ready only once its ``.base`` file exists (written
last); anything else found on disk (a crash mid-refill) is removed when the
repository's entries are first looked at.

Layout: ``<root>/<key>.d/<entry>/`` with the entry's commit in
``<root>/<key>.d/<entry>.base``; ``key`` hashes the repository path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
from pathlib import Path

import anyio
import msgspec

from ._worktree import GitError, git

LOGGER = logging.getLogger(__name__)


def repo_key(repo: Path) -> str:
    return hashlib.sha256(str(repo).encode()).hexdigest()[:16]


class PoolStats(msgspec.Struct, frozen=True, kw_only=True):
    hits: int
    misses: int
    ready: int
    refilling: int
    recycled: int
    fresh_checkouts: int
    bytes_held: int
    budget_bytes: int


class _Repo:
    """What the pool knows of one repository's entries (trio-side state, no locks needed)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.ready: dict[Path, str] = {}  # entry -> commit it is checked out at
        self.pending = 0  # refills and recycles under way
        self.out = 0  # runs holding a worktree of this repository (they may give it back)
        self.scanned = False
        self.entry_bytes = 0  # checked-out size of one entry (0 = not measured yet)


def tree_bytes(path: Path) -> int:
    """Disk use of a checked-out tree (allocated blocks), ``.git`` excluded. Blocking."""
    total = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    if e.name == ".git":
                        continue
                    if e.is_dir(follow_symlinks=False):
                        stack.append(Path(e.path))
                    else:
                        total += e.stat(follow_symlinks=False).st_blocks * 512
        except OSError:
            continue
    return total


class WorktreePool:
    def __init__(self, root: Path, *, enabled: bool = True, per_repo: int = 4,
                 budget_bytes: int = 2 << 30, parallel: int = 2) -> None:
        self.root = root
        self.enabled = enabled and per_repo > 0 and budget_bytes > 0
        self.per_repo = per_repo
        self.budget_bytes = budget_bytes
        self.hits = 0
        self.misses = 0
        self.recycled = 0
        self.fresh = 0
        self._repos: dict[Path, _Repo] = {}
        self._limiter = anyio.CapacityLimiter(max(1, parallel))

    # ------------------------------------------------------------------ bookkeeping
    def _repo(self, repo: Path) -> _Repo:
        r = self._repos.get(repo)
        if r is None:
            r = self._repos[repo] = _Repo(self.root / f"{repo_key(repo)}.d")
        return r

    def bytes_held(self) -> int:
        return sum((len(r.ready) + r.pending) * r.entry_bytes for r in self._repos.values())

    def _room_for(self, r: _Repo) -> bool:
        return self.bytes_held() + r.entry_bytes <= self.budget_bytes

    def statistics(self) -> PoolStats:
        return PoolStats(hits=self.hits, misses=self.misses,
                         ready=sum(len(r.ready) for r in self._repos.values()),
                         refilling=sum(r.pending for r in self._repos.values()),
                         recycled=self.recycled, fresh_checkouts=self.fresh,
                         bytes_held=self.bytes_held(), budget_bytes=self.budget_bytes)

    async def _scan(self, repo: Path, r: _Repo, lock: anyio.Lock) -> None:
        """First look at a repository's entries after a (re)start: keep the ready ones,
        remove leftovers (a crash mid-refill, the one-entry layout of older versions)."""
        if r.scanned:
            return
        r.scanned = True
        old = self.root / repo_key(repo)
        for leftover in (old, old.with_suffix(".base")):
            if await anyio.Path(leftover).exists():
                await self._discard(repo, leftover, lock)
        if not await anyio.Path(r.home).is_dir():
            return
        for entry in sorted(Path(p) for p in await anyio.to_thread.run_sync(os.listdir, r.home)):
            if entry.suffix == ".base":
                continue
            path = r.home / entry
            try:
                base = (await anyio.Path(path.with_suffix(".base")).read_text()).strip()
            except OSError:
                base = ""
            if base and await anyio.Path(path / ".git").exists():
                r.ready[path] = base
            else:
                await self._discard(repo, path, lock)
        if r.ready and not r.entry_bytes:
            r.entry_bytes = await anyio.to_thread.run_sync(tree_bytes, next(iter(r.ready)))

    async def _discard(self, repo: Path, path: Path, lock: anyio.Lock) -> None:
        await anyio.Path(path.with_suffix(".base")).unlink(missing_ok=True)
        if await anyio.Path(path).exists():
            async with lock:
                try:
                    await git(repo, "worktree", "remove", "--force", "--force", str(path))
                except GitError:
                    pass
            await anyio.to_thread.run_sync(shutil.rmtree, path, True)

    # ------------------------------------------------------------------ the start path
    async def take(self, repo: Path, base_sha: str, dest: Path, branch: str,
                   lock: anyio.Lock) -> bool:
        """Move a ready worktree of ``repo`` to ``dest`` on a new ``branch`` at ``base_sha``.

        Returns ``False`` (and changes nothing at ``dest``) when none is ready; never
        waits for a refill. The caller then checks out itself.
        """
        if not self.enabled:
            return False
        r = self._repo(repo)
        await self._scan(repo, r, lock)
        r.out += 1  # from here this run holds a worktree of the repository, pooled or not
        if not r.ready:
            self.misses += 1
            return False
        entry = next((e for e, b in r.ready.items() if b == base_sha), next(iter(r.ready)))
        del r.ready[entry]  # claimed: no await between the choice and this line
        try:
            await anyio.Path(entry.with_suffix(".base")).unlink(missing_ok=True)
            async with lock:
                await git(repo, "worktree", "move", str(entry), str(dest))
            # same commit: no file written; another commit: only the files that differ
            await git(dest, "switch", "--quiet", "--discard-changes", "--create", branch, base_sha)
        except (GitError, OSError) as exc:
            LOGGER.warning("worktree pool entry for %s unusable (%s); checking out instead",
                           repo, exc)
            for path in (entry, dest):
                await self._discard(repo, path, lock)
            self.misses += 1
            return False
        self.hits += 1
        return True

    # ------------------------------------------------------------------ refills
    async def refill(self, repo: Path, base_sha: str, lock: anyio.Lock) -> None:
        """Top ``repo`` up to ``per_repo`` worktrees at ``base_sha`` (ready, being prepared,
        or held by runs), several checkouts at once, within the disk budget."""
        if not self.enabled:
            return
        r = self._repo(repo)
        await self._scan(repo, r, lock)
        wanted = self.per_repo - len(r.ready) - r.pending - r.out
        if wanted <= 0:
            return
        async with anyio.create_task_group() as tg:
            for i in range(wanted):
                # an entry's size is known once one exists: until then, one checkout at a time
                if (r.entry_bytes and not self._room_for(r)) or (not r.entry_bytes and i):
                    break
                r.pending += 1
                tg.start_soon(self._fresh, repo, r, base_sha, lock)

    async def _fresh(self, repo: Path, r: _Repo, base_sha: str, lock: anyio.Lock) -> None:
        entry = r.home / secrets.token_hex(4)
        try:
            async with self._limiter:
                await anyio.Path(r.home).mkdir(parents=True, exist_ok=True)
                async with lock:
                    await git(repo, "worktree", "add", "--quiet", "--no-checkout", "--detach",
                              str(entry), base_sha)
                # the checkout happens outside the repository lock: the entry is ours alone
                await git(entry, "reset", "--quiet", "--hard", base_sha)
            await self._ready(r, entry, base_sha)
            self.fresh += 1
        except (GitError, OSError) as exc:
            LOGGER.warning("could not refill the worktree pool for %s: %s", repo, exc)
            await self._discard(repo, entry, lock)
        finally:
            r.pending -= 1

    async def _ready(self, r: _Repo, entry: Path, base_sha: str) -> None:
        if not r.entry_bytes:
            r.entry_bytes = await anyio.to_thread.run_sync(tree_bytes, entry)
        await anyio.Path(entry.with_suffix(".base")).write_text(base_sha + "\n")
        r.ready[entry] = base_sha

    # ------------------------------------------------------------------ the end of a run
    def released(self, repo: Path) -> None:
        """A run of ``repo`` no longer holds its worktree (removed, not recycled)."""
        r = self._repos.get(repo)
        if r is not None and r.out > 0:
            r.out -= 1

    def wants(self, repo: Path) -> bool:
        """Would :meth:`recycle` keep a worktree of ``repo`` now (room in the pool and on disk)?"""
        if not self.enabled:
            return False
        r = self._repo(repo)
        return len(r.ready) + r.pending < self.per_repo and self._room_for(r)

    async def recycle(self, repo: Path, worktree: Path, base_sha: str, lock: anyio.Lock) -> bool:
        """Take an ended run's ``worktree`` back: detached at ``base_sha``, every untracked
        and ignored file removed. Returns ``False`` when it was removed instead."""
        r = self._repo(repo)
        self.released(repo)
        if not self.wants(repo):
            await self._discard(repo, worktree, lock)
            return False
        r.pending += 1
        entry = r.home / secrets.token_hex(4)
        try:
            await anyio.Path(r.home).mkdir(parents=True, exist_ok=True)
            async with lock:
                await git(repo, "worktree", "move", str(worktree), str(entry))
            await git(entry, "checkout", "--quiet", "--force", "--detach", base_sha)
            await git(entry, "clean", "-ffdxq")
            await self._ready(r, entry, base_sha)
            self.recycled += 1
            return True
        except (GitError, OSError) as exc:
            LOGGER.warning("could not recycle worktree %s: %s", worktree, exc)
            for path in (worktree, entry):
                await self._discard(repo, path, lock)
            return False
        finally:
            r.pending -= 1

    async def drop(self, repo: Path, lock: anyio.Lock) -> None:
        """Remove every ready entry of ``repo`` (e.g. the repository is gone)."""
        r = self._repo(repo)
        await self._scan(repo, r, lock)
        entries, r.ready = list(r.ready), {}
        for entry in entries:
            await self._discard(repo, entry, lock)

"""Git worktrees and per-run locks.

Each run works in ``<state>/worktrees/<run-id>`` on branch ``autopack/<run-id>``,
never in the user's checkout. The per-run lock is an ``flock`` on
``<state>/locks/<run-id>.lock`` holding the owner's pid and host: the kernel
drops it when the owner dies, so a crashed daemon never leaves a run stuck,
and two live daemons never execute the same run.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
from pathlib import Path

import anyio

from ._errors import GitError as GitError
from ._errors import RunLocked as RunLocked
from ._git import git as git
from ._git import git_process as git_process

PHASE_TRAILER = "Autopack-Phase"


def is_git_repo(path: str | Path) -> bool:
    """Cheap check without running git: a ``.git`` dir or file at ``path``."""
    return (Path(path) / ".git").exists()


async def resolve_base(repo: Path, base: str) -> str:
    """The commit sha ``base`` names in ``repo``.

    ``HEAD`` (the default, and the common case) is read straight from the ref
    files: no process on the submit → first check path. Anything else, or any
    doubt, asks ``git rev-parse`` (which also knows tag/branch precedence)."""
    sha = read_ref(repo, base)
    if sha is not None:
        return sha
    return await git(repo, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}")


_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


def read_ref(repo: Path, name: str) -> str | None:
    """Resolve ``HEAD`` with the files ref backend; ``None`` when unsure (any other name,
    not a plain ``.git`` directory, reftable, a symbolic ref outside refs/heads …)."""
    gitdir = repo / ".git"
    try:
        if not gitdir.is_dir() or "reftable" in (gitdir / "config").read_text():
            return None
        if name != "HEAD":
            return None
        head = (gitdir / "HEAD").read_text().strip()
        if _SHA_RE.match(head):
            return head
        if not head.startswith("ref: refs/heads/"):
            return None
        ref = head[5:]
        loose = gitdir / ref
        if loose.is_file():
            value = loose.read_text().strip()
            return value if _SHA_RE.match(value) else None
        packed = gitdir / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                sha, _, pref = line.partition(" ")
                if pref == ref and _SHA_RE.match(sha):
                    return sha
    except OSError:
        return None
    return None


async def git_dirs(worktree: Path) -> list[Path]:
    """The repository's real git dir behind a worktree (its ``.git`` is a pointer file):
    what a sandbox binds read-only so git works inside and can write nothing there."""
    try:  # the pointer file and the gitdir's commondir: no process on the run's start path
        text = (worktree / ".git").read_text().strip()
        if text.startswith("gitdir: "):
            gitdir = (worktree / text[8:]).resolve()
            common = (gitdir / (gitdir / "commondir").read_text().strip()).resolve()
            if (common / "objects").is_dir():
                return [common]
    except OSError:
        pass
    out = await git(worktree, "rev-parse", "--path-format=absolute", "--git-common-dir")
    return [Path(out)] if out else []


async def branch_exists(repo: Path, branch: str) -> bool:
    out = await git(repo, "branch", "--list", branch)
    return bool(out.strip())


async def ensure_worktree(repo: Path, path: Path, branch: str, base_sha: str, *,
                          lock: anyio.Lock, fresh: bool = False) -> bool:
    """Create the run's worktree, or re-attach the existing one after a restart.

    Returns ``True`` when an existing worktree/branch was reused. Uncommitted
    changes of an interrupted attempt are discarded: the attempt restarts.
    ``lock`` (one per repository) is held only while git changes the
    repository's worktree list. ``fresh`` (a run never started before) skips
    the checks for leftovers, one git call each, on the submit → check path.
    """
    if fresh:
        try:
            async with lock:
                await git(repo, "worktree", "add", "--quiet", "--no-checkout", "-b", branch,
                          str(path), base_sha)
            # the checkout runs outside the repository lock: the worktree is ours alone
            await git(path, "reset", "--quiet", "--hard", base_sha)
            return False
        except GitError:
            pass  # something is in the way after all: take the careful path
    if await anyio.Path(path / ".git").exists():
        try:
            head = await git(path, "rev-parse", "--abbrev-ref", "HEAD")
        except GitError:
            head = ""
        if head == branch:
            await git(path, "reset", "--hard", "--quiet", "HEAD")
            await git(path, "clean", "-fdq")
            return True
        async with lock:
            await remove_worktree(repo, path)
    elif await anyio.Path(path).exists():
        await anyio.to_thread.run_sync(shutil.rmtree, path, True)
    await anyio.Path(path.parent).mkdir(parents=True, exist_ok=True)
    async with lock:
        await git(repo, "worktree", "prune")
        if await branch_exists(repo, branch):
            await git(repo, "worktree", "add", "--quiet", str(path), branch)
            return True
        await git(repo, "worktree", "add", "--quiet", "-b", branch, str(path), base_sha)
    return False


async def remove_worktree(repo: Path, path: Path) -> None:
    """Remove a worktree (its branch stays). Never raises for a worktree already gone."""
    if await anyio.Path(path).exists():
        try:
            await git(repo, "worktree", "remove", "--force", "--force", str(path))
        except GitError:
            await anyio.to_thread.run_sync(shutil.rmtree, path, True)
    try:
        await git(repo, "worktree", "prune")
    except GitError:
        pass


NO_NODE_MODULES = ":(exclude,glob)**/node_modules/**"  # pathspec: installed, not the change


async def commit_phase(worktree: Path, run_id: str, phase_id: str, goal: str) -> str | None:
    """Commit everything in the worktree for a finished phase; ``None`` when nothing changed.

    The commit carries an ``Autopack-Phase: <run>/<phase>`` trailer so that a
    restarted daemon can tell that the phase was already committed. ``node_modules``
    directories (the install step's, gitignored or not) are never committed.
    """
    await git(worktree, "add", "--all", "--", ".", NO_NODE_MODULES)
    proc = await git_process(worktree, "diff", "--cached", "--quiet")
    if proc.returncode == 0:
        return None
    title = goal.strip().splitlines()[0][:72] if goal.strip() else phase_id
    message = f"{phase_id}: {title}\n\n{PHASE_TRAILER}: {run_id}/{phase_id}\n"
    await git(worktree, "commit", "--quiet", "--no-verify", "-m", message)
    return await git(worktree, "rev-parse", "HEAD")


async def committed_phase(worktree: Path, base_sha: str, run_id: str, phase_id: str) -> str | None:
    """The sha of the commit recording ``phase_id`` on the run branch, if there is one."""
    out = await git(worktree, "log", "--format=%H", "--fixed-strings",
                    f"--grep={PHASE_TRAILER}: {run_id}/{phase_id}", f"{base_sha}..HEAD")
    return out.splitlines()[0] if out else None


async def branch_commits(repo: Path, base_sha: str, branch: str) -> list[dict[str, str]]:
    out = await git(repo, "log", "--reverse", "--format=%H%x09%s", f"{base_sha}..{branch}")
    result = []
    for line in out.splitlines():
        sha, _, subject = line.partition("\t")
        result.append({"sha": sha, "subject": subject})
    return result


class RunLock:
    """An acquired per-run lock; ``release()`` (or process death) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    def release(self) -> None:
        # the file is not unlinked: another process may already hold an fd to it, and
        # unlinking would let a third lock a fresh inode of the same name
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def acquire_run_lock(lock_dir: Path, run_id: str) -> RunLock:
    """Take the run's lock or raise :class:`RunLocked` naming the holder (pid@host)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{run_id}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise RunLocked(f"run {run_id} is being executed by {holder}") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    except OSError:
        # the holder note is for people only; a full disk must not leak the locked fd
        # (it would keep the run "being executed by another process" until a restart)
        pass
    except BaseException:
        os.close(fd)
        raise
    return RunLock(path, fd)


def lock_is_held(lock_dir: Path, run_id: str) -> bool:
    """True when some live process holds the run's lock (probe without keeping it)."""
    try:
        lock = acquire_run_lock(lock_dir, run_id)
    except RunLocked:
        return True
    lock.release()
    return False

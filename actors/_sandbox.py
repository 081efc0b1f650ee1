"""The sandbox around every command a run executes (bubblewrap), and its start-up probe.

Theory of operation
-------------------
Every command of a run — the Builder's bash tool, the install step, checks,
mitigations, the Doctor's fix commands — is started by :func:`._proc.run_command`
with the run's :class:`RunBox`, which turns ``bash -c COMMAND`` into::

    bwrap <namespaces> <mounts> --as-pid-1 -- bash -c WRAPPER sandbox COMMAND

Mounts, in this order (later ones win):

* ``/`` read-only; a fresh ``/dev``; a fresh ``/proc`` of the new PID namespace
  (only the sandbox's own processes: no ``/proc/<daemon>/environ``); ``/run``
  empty (sockets of system services: docker, dbus, postgres …);
* ``/tmp`` = the run's private scratch dir ``<state>/tmp/<run-id>`` (kept across
  the run's commands, removed with the run; the host's ``/tmp`` is not visible);
* hidden: the daemon user's home secrets (:data:`HOME_SECRETS`), the API key
  file, the config file, the control socket, and the whole state dir (database,
  other runs' worktrees and environments, reports, locks) under an empty tmpfs;
* read-only again: the repository's real git dir (so ``git status`` / ``git
  diff`` work, while ``hooks/``, ``config`` and refs can never be written);
* writable: the run's worktree and its environment dir; the worktree's ``.git``
  pointer file read-only (a run cannot point the daemon's own git at a git dir
  of its choosing).

Namespaces: user (no capabilities; nested user namespaces refused with
``--disable-userns``), PID, IPC, UTS, cgroup, and network unless the step may
use the network (run spec ``network``: ``none`` | ``install`` | ``all``).

Nothing outlives a command: ``--as-pid-1`` makes the wrapper shell PID 1 of the
namespace, so when it exits the kernel kills everything left in it (``setsid
-f``, ``nohup … &``). ``--die-with-parent`` is *not* used: it arms
``PR_SET_PDEATHSIG`` against the spawning *thread*, and trio spawns from worker
threads that end after 10 s idle — that killed every command older than 10 s.
Instead the wrapper starts a watcher that blocks on a pipe whose write end only
the daemon holds: when the daemon dies (even ``kill -9``) the read returns and
the watcher kills the namespace. A restarted daemon also kills every
sandbox still tagged with its state dir (:func:`reap_leftovers`) before any run
resumes. Limits (address space, processes, file size, CPU seconds) are set by
the wrapper with ``ulimit -S -H`` before the command starts; without
capabilities they cannot be raised again.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec

from ._errors import SandboxUnavailable as SandboxUnavailable

LOGGER = logging.getLogger(__name__)

SandboxMode = Literal["bwrap", "unavailable", "off"]
NetworkPolicy = Literal["none", "install", "all"]
NETWORK_POLICIES: tuple[str, ...] = ("none", "install", "all")
#: ``command``: Builder bash, checks. ``install``: install step, mitigations, fix commands.
StepKind = Literal["command", "install"]

#: Entries of the daemon user's home that hold credentials; hidden when they exist.
HOME_SECRETS: tuple[str, ...] = (
    ".ssh", ".gnupg", ".aws", ".azure", ".config/gcloud", ".kube", ".docker", ".netrc",
    ".git-credentials", ".pypirc", ".npmrc", ".yarnrc", ".config/gh", ".config/hub",
    ".anthropic", ".config/anthropic", ".claude", ".claude.json", ".config/autopack",
    ".local/share/keyrings", ".password-store", ".cargo/credentials", ".cargo/credentials.toml",
    ".config/pip", ".terraform.d", ".terraformrc", ".vault-token", ".pgpass", ".my.cnf",
    ".local/state/autopack", ".config/git/credentials",
)

# namespace flag sets, strongest first; the probe keeps the first one that works here
_NAMESPACES = ("--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
               "--unshare-cgroup-try")
_CANDIDATES: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("user+pid+net namespaces, nested user namespaces disabled, own /proc",
     (*_NAMESPACES, "--disable-userns"), True),
    ("user+pid+net namespaces, own /proc (this bwrap cannot --disable-userns)", _NAMESPACES, True),
    ("pid+net namespaces without a user namespace (setuid bwrap), own /proc",
     ("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"), True),
    ("user+pid+net namespaces; /proc refused here (container?): /proc is an empty tmpfs",
     _NAMESPACES, False),
)


class SandboxLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Per-process limits inside the sandbox (0 = no limit). Each is ``ulimit -S -H``:

    * ``memory_mb`` — address space (``RLIMIT_AS``) per process; runtimes that
      reserve large virtual areas (JVM, V8) may need more than they use.
    * ``processes`` — ``RLIMIT_NPROC``: processes and threads of the sandbox's
      user; the kernel does not apply it to root (a daemon running as root).
    * ``file_size_mb`` — largest file a process may write (``RLIMIT_FSIZE``).
    * ``cpu_s`` — CPU seconds per process (``RLIMIT_CPU``); wall time is the
      check's ``timeout_s``.
    """

    memory_mb: int = 8192
    processes: int = 2048
    file_size_mb: int = 4096
    cpu_s: int = 3600


class Probe(msgspec.Struct, frozen=True, kw_only=True):
    """What the start-up probe found: the mode, a one-line detail, the flags that work."""

    mode: SandboxMode
    detail: str
    flags: tuple[str, ...] = ()
    own_proc: bool = True


def _bwrap_path() -> str | None:
    return shutil.which("bwrap")


def probe(setting: str = "auto") -> Probe:
    """Find a working bubblewrap flag set (blocking: call it once, in a thread).

    ``setting`` is the daemon's ``sandbox`` setting: ``off`` skips the probe.
    Each candidate is tried with ``-- true`` inside the full mount set; the
    first that works is kept and the reason the stronger ones failed is logged.
    """
    if setting == "off":
        return Probe(mode="off", detail="sandbox = \"off\" set by the operator: commands run "
                                        "unconfined")
    bwrap = _bwrap_path()
    if bwrap is None:
        return Probe(mode="unavailable", detail="bwrap not found on PATH (Debian package "
                                                "bubblewrap)")
    failures: list[str] = []
    for label, flags, own_proc in _CANDIDATES:
        argv = [bwrap, *flags, "--unshare-net", "--ro-bind", "/", "/", "--dev", "/dev",
                *(("--proc", "/proc") if own_proc else ("--tmpfs", "/proc")),
                "--tmpfs", "/run", "--tmpfs", "/tmp", "--as-pid-1", "--", "true"]
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=20, check=False,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            failures.append(f"{label}: {exc}")
            continue
        if proc.returncode == 0:
            if failures:
                LOGGER.warning("sandbox: stronger flag sets failed here: %s", "; ".join(failures))
            return Probe(mode="bwrap", detail=label, flags=flags, own_proc=own_proc)
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        failures.append(f"{label}: {err[-1] if err else f'exit {proc.returncode}'}")
    return Probe(mode="unavailable", detail="bwrap does not work here: " + failures[0]
                 + (" (user namespaces refused? AppArmor: kernel.apparmor_restrict_"
                    "unprivileged_userns)" if "namespace" in failures[0].lower() else ""))


# ---------------------------------------------------------------------------- pure argv
def wrapper_script(watch_fd: int | None, limits: SandboxLimits) -> str:
    """The shell that runs as the sandbox's PID 1: watcher, limits, then ``bash -c "$1"``."""
    parts: list[str] = []
    if watch_fd is not None:
        # blocks until the daemon's end of the pipe closes (the daemon died): kill the rest;
        # PID 1 (this shell) then returns from wait and its exit tears the namespace down
        parts.append(f"{{ read -r -u {watch_fd} _; kill -KILL -1; }} & exec {watch_fd}<&-")
    parts.append(ulimit_line(limits))
    if watch_fd is None:
        parts.append('exec bash -c "$1"')  # unconfined: the command's parent stays the daemon
    else:
        parts.append('bash -c "$1"')  # PID 1 waits; its exit empties the namespace
        parts.append("exit $?")
    return "; ".join(p for p in parts if p)


def ulimit_line(limits: SandboxLimits) -> str:
    """``ulimit -S -H …`` for the non-zero limits (bash units: KiB for -v and -f)."""
    opts = []
    if limits.memory_mb:
        opts.append(f"-v {limits.memory_mb * 1024}")
    if limits.processes:
        opts.append(f"-u {limits.processes}")
    if limits.file_size_mb:
        opts.append(f"-f {limits.file_size_mb * 1024}")
    if limits.cpu_s:
        opts.append(f"-t {limits.cpu_s}")
    return ("ulimit -S -H " + " ".join(opts)) if opts else ""


@dataclass(frozen=True)
class Mounts:
    """Host paths of one run's sandbox (absolute)."""

    worktree: Path
    scratch: Path  # bound at /tmp
    state_dir: Path
    writable: tuple[Path, ...] = ()  # the run's environment
    readonly: tuple[Path, ...] = ()  # the repository's real git dir
    # download caches shared by runs: writable for install steps, read-only for the rest
    # (a check or the Builder's bash cannot plant a package another run would install)
    install_writable: tuple[Path, ...] = ()
    hidden: tuple[Path, ...] = ()  # existing secrets outside the state dir


def bwrap_argv(bwrap: str, flags: Sequence[str], mounts: Mounts, *, cwd: Path, network: bool,
               own_proc: bool, script: str, command: str, install: bool = False) -> list[str]:
    """The full argv that runs ``command`` confined (pure: no file system access)."""
    argv = [bwrap, *flags]
    if not network:
        argv.append("--unshare-net")
    argv += ["--ro-bind", "/", "/", "--dev", "/dev"]
    argv += ["--proc", "/proc"] if own_proc else ["--tmpfs", "/proc"]
    argv += ["--tmpfs", "/run", "--bind", str(mounts.scratch), "/tmp"]
    for path in mounts.hidden:
        argv += _hide(path)
    argv += ["--tmpfs", str(mounts.state_dir)]  # also the tag reap_leftovers looks for
    for path in mounts.readonly:
        argv += ["--ro-bind-try", str(path), str(path)]
    for path in mounts.writable:  # -try: the run's environment may not exist yet
        argv += ["--bind-try", str(path), str(path)]
    for path in mounts.install_writable:
        argv += ["--bind-try" if install else "--ro-bind-try", str(path), str(path)]
    argv += ["--bind", str(mounts.worktree), str(mounts.worktree)]
    dotgit = mounts.worktree / ".git"
    argv += ["--ro-bind-try", str(dotgit), str(dotgit)]
    argv += ["--chdir", str(cwd), "--as-pid-1", "--", "bash", "-c", script, "sandbox", command]
    return argv


def _hide(path: Path) -> list[str]:
    # a directory becomes an empty tmpfs; a file (or socket) becomes /dev/null
    return ["--tmpfs", str(path)] if path.is_dir() else ["--ro-bind", "/dev/null", str(path)]


# ---------------------------------------------------------------------------- the daemon's box
_WATCH: tuple[int, int] | None = None


def _watch_fd() -> int:
    """Read end of the daemon-lifetime pipe (the write end stays here, never inherited)."""
    global _WATCH
    if _WATCH is None:
        _WATCH = os.pipe()  # both non-inheritable; pass_fds hands the read end to bwrap only
    return _WATCH[0]


@dataclass
class Sandbox:
    """The daemon's sandbox: the probe's result plus what to hide. One per daemon."""

    probe: Probe
    state_dir: Path
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    default_network: str = "install"
    hide: tuple[Path, ...] = ()  # extra secrets: key file, config file, control socket
    read_only: tuple[Path, ...] = ()  # operator's extra read-only paths (sandbox_read_only)
    writable: tuple[Path, ...] = ()  # operator's extra writable paths (sandbox_writable)

    @property
    def mode(self) -> SandboxMode:
        return self.probe.mode

    def describe(self) -> str:
        """``bwrap``, ``unavailable`` or ``off`` — what health and reports show."""
        return self.probe.mode

    def hidden_paths(self) -> tuple[Path, ...]:
        home = Path(os.path.expanduser("~"))
        paths = [home / rel for rel in HOME_SECRETS]
        cred = os.environ.get("CREDENTIALS_DIRECTORY")
        if cred:
            paths.append(Path(cred))
        paths += list(self.hide)
        state = self.state_dir.resolve()
        out: list[Path] = []
        for p in paths:
            try:
                real = p.resolve()
                if real.exists() and not real.is_relative_to(state) and real not in out:
                    out.append(real)
            except OSError:
                continue
        return tuple(out)

    def box(self, *, worktree: Path, scratch: Path, writable: Iterable[Path] = (),
            readonly: Iterable[Path] = (), install_writable: Iterable[Path] = (),
            network: str | None = None) -> RunBox:
        """The confinement of one run (the caller creates ``scratch`` and ``writable``)."""
        policy = network or self.default_network
        return RunBox(sandbox=self, network=policy, mounts=Mounts(
            worktree=worktree.resolve(), scratch=scratch.resolve(),
            state_dir=self.state_dir.resolve(),
            writable=tuple(p.resolve() for p in (*writable, *self.writable)),
            readonly=tuple(p.resolve() for p in (*readonly, *self.read_only)),
            install_writable=tuple(p.resolve() for p in install_writable),
            hidden=self.hidden_paths()))


@dataclass(frozen=True)
class Launch:
    """How to start one command: argv, extra env, fds to pass."""

    argv: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()


@dataclass
class RunBox:
    """One run's confinement; :meth:`launch` builds the argv for one command."""

    sandbox: Sandbox
    network: str
    mounts: Mounts

    @property
    def mode(self) -> SandboxMode:
        return self.sandbox.mode

    def allows_network(self, step: StepKind) -> bool:
        return self.network == "all" or (self.network == "install" and step == "install")

    def launch(self, command: str, *, cwd: Path, env: Mapping[str, str],
               step: StepKind = "command") -> Launch:
        """argv + env for ``command``. Raises :class:`SandboxUnavailable` when the probe
        found no working bwrap (callers refuse the work instead of running it bare)."""
        limits = self.sandbox.limits
        if self.mode == "off":
            return Launch(argv=["bash", "-c", wrapper_script(None, limits), "sandbox", command],
                          env=dict(env))
        if self.mode != "bwrap":
            raise SandboxUnavailable(self.sandbox.probe.detail)
        bwrap = _bwrap_path() or "bwrap"
        fd = _watch_fd()
        probe_ = self.sandbox.probe
        argv = bwrap_argv(bwrap, probe_.flags, self.mounts, cwd=cwd,
                          network=self.allows_network(step), own_proc=probe_.own_proc,
                          script=wrapper_script(fd, limits), command=command,
                          install=step == "install")
        inner = dict(env)
        inner.update({"TMPDIR": "/tmp", "XDG_CACHE_HOME": "/tmp/.cache",
                      "npm_config_cache": "/tmp/.npm", "GOCACHE": "/tmp/.cache/go-build"})
        return Launch(argv=argv, env=inner, pass_fds=(fd,))


def scratch_dir(state_dir: Path, run_id: str) -> Path:
    """The host directory a run sees as ``/tmp`` (removed with the run)."""
    return state_dir / "tmp" / run_id


# ---------------------------------------------------------------------------- leftovers
def reap_leftovers(state_dir: Path, *, proc_root: Path = Path("/proc")) -> list[int]:
    """Kill every sandbox a previous daemon of ``state_dir`` left running.

    A sandbox is recognised by its ``bwrap`` command line carrying ``--tmpfs
    <state_dir>`` (every one of ours does). Returns the killed pids."""
    tag = str(state_dir.resolve())
    me = os.getpid()
    killed: list[int] = []
    children: dict[int, list[int]] = {}
    tagged: list[int] = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(pid)
        if pid == me or not argv or not argv[0].endswith(b"bwrap"):
            continue
        words = [a.decode("utf-8", "replace") for a in argv]
        if any(a == "--tmpfs" and b == tag for a, b in zip(words, words[1:], strict=False)):
            tagged.append(pid)
    for pid in tagged:
        for victim in [pid, *children.get(pid, [])]:
            try:
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
            except (ProcessLookupError, PermissionError):
                pass
    return killed


def scrub_environ(names: Iterable[str], *, proc_self: Path = Path("/proc/self")) -> list[str]:
    """Remove ``names`` from the daemon's environment, including the copy the kernel shows
    as ``/proc/<pid>/environ``; returns the names that were present.

    ``del os.environ[...]`` alone is not enough on Linux: ``/proc/<pid>/environ``
    reads the process's *initial* environment block (between ``env_start`` and
    ``env_end`` of ``/proc/self/stat``, on the main thread's stack), which libc's
    ``unsetenv`` never touches. So the ``NAME=value`` bytes there are overwritten
    with NULs in place (the memory is ours and writable). A sandboxed command
    cannot see the daemon's ``/proc`` entry anyway (own PID namespace); this
    covers ``sandbox = "off"`` and anyone else who can read the daemon's ``/proc``.
    """
    import ctypes

    present = [n for n in names if n in os.environ]
    for name in present:
        os.environ.pop(name, None)  # also unsetenv(): children never inherit it
    try:
        fields = (proc_self / "stat").read_text().rpartition(")")[2].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end (fields 50, 51)
    except (OSError, IndexError, ValueError):
        return present
    if not 0 < start < end:
        return present
    block = (ctypes.c_char * (end - start)).from_address(start)
    data = bytes(block)
    for name in names:
        key = name.encode() + b"="
        at = 0
        while (at := data.find(key, at)) != -1:
            if at == 0 or data[at - 1] == 0:
                stop = data.find(b"\0", at)
                stop = len(data) if stop == -1 else stop
                ctypes.memset(ctypes.addressof(block) + at, 0, stop - at)
            at += len(key)
    return present


def quote(argv: Sequence[str]) -> str:
    """A shell-quoted command line (mitigations run argv lists through the same sandbox)."""
    return shlex.join(argv)

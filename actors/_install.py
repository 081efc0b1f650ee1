"""The run's environment: made once per run, filled by the install step, reused when ready.

Theory of operation
-------------------
Every command of a run (install, checks, the Builder's bash tool, fixes) runs
with the run's own environment, never with the daemon's interpreter or the
machine's site-packages:

* Python: a virtualenv at ``<state>/envs/<run-id>`` (:func:`._env.run_env_dir`),
  made without system site-packages and filled by the install step — the
  detected steps (``pip install -e '.[test]'``, requirement files, pytest
  when the project does not declare it; see ``autopackctl detect``) or the
  spec's ``setup`` commands, which replace them. Node installs with the
  lockfile's manager into the worktree (``node_modules``); a ready
  ``node_modules`` is kept and cloned like a virtualenv (:func:`node_cache_key`:
  package.json, lockfile, command, node's and the manager's versions).
* The install step runs once per run, before the first check. A failed step
  ends the run with its output classified like a check's.
* Ready environments are kept under ``<state>/envcache/<key>``, keyed by the
  install inputs (pyproject.toml, setup.py/cfg, requirement files, lockfiles),
  the install commands, the interpreter and the installer. A run whose key is
  ready gets a clone: fresh directories whose files are hardlinks to the
  entry's (``cp -al``; tens of milliseconds where a copy takes seconds), with
  the absolute paths of the run that built it (venv, worktree: scripts'
  shebangs, editable ``.pth`` files) rewritten into new private files. Python
  projects installed editable keep pointing at the new run's worktree, so the
  project's own code is never stale.
* A hardlinked file written *in place* would change the entry for every later
  run. Installers replace files (new inode, the run's own directory), so they
  are safe; against the rest, the entry's files are read-only (an unprivileged
  daemon's runs get EACCES on an in-place write) and every file's size and
  mtime are recorded when the entry is stored: an entry that changed since is
  dropped at the next clone and the run installs from scratch. (A run that
  writes in place while a sibling runs from the same entry can still affect
  that sibling: that is the price of the speed.)

Installer: ``uv`` when it is available (the ``uv`` package's binary, else one
on PATH), else ``python -m venv`` and pip: measured by
``bench/start_to_test.py`` (uv makes and fills an environment many times
faster). The venv is seeded with pip either way: fixes install with
``python -m pip``. Tool caches live under ``<state>/cache`` (uv copies from
its cache instead of hardlinking, for the same reason as above).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import msgspec

from ._toolchain import Detection

LOGGER = logging.getLogger(__name__)

__all__ = ["EnvCache", "InstallPlan", "NodeInstall", "install_env", "node_cache_key",
           "plan_install", "poetry_binary", "uv_binary"]

_META = "autopack-env.json"
_KEEP = 12  # ready environments kept; the least recently used go first
_PIP_INSTALL = "python -m pip install "


class NodeInstall(msgspec.Struct, frozen=True, kw_only=True):
    """The detected Node install: one command filling one ``node_modules`` (cacheable)."""

    step: str  # the shell command (also in :attr:`InstallPlan.steps`)
    manager: str  # npm | yarn | pnpm
    modules: str  # the node_modules it fills, relative to the run's working directory
    inputs: list[str]  # package.json and the lockfile, relative to the working directory


class InstallPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What the install step of a run does (pure data; see :func:`plan_install`).

    ``venv_steps`` only fill the virtualenv: skipped when a ready copy is reused.
    ``steps`` run every time (Node installs into the worktree; a spec's ``setup``,
    whose effects autopack cannot know — on a ready copy they find little to do).
    """

    venv_steps: list[str]  # shell commands, run from the worktree root with the run's env
    steps: list[str]
    source: str  # "spec" (setup = [...]) | "detected" | "none"
    venv: bool  # the run needs its own Python virtualenv
    inputs: list[str]  # repo-relative files that decide the install (the cache key)
    installer: str  # "uv" | "pip"
    node: NodeInstall | None = None  # the detected Node install, kept ready like a venv


@cache
def poetry_binary() -> str | None:
    """The ``poetry`` executable for poetry-managed projects: one on the daemon's PATH,
    else the one installed beside the daemon's interpreter (its virtualenv), else None.

    The runs' PATH leaves the daemon's virtualenv out (:func:`._env.base_env`), so the
    install step names it by its absolute path.
    """
    found = shutil.which("poetry")
    if found:
        return found
    beside = Path(sys.executable).parent / "poetry"
    return str(beside) if os.access(beside, os.X_OK) else None


_FIND = "\0find"  # plan_install(poetry=...) default: look the executable up


@cache
def uv_binary() -> str | None:
    """The ``uv`` executable: the ``uv`` package's binary, else one on PATH, else None."""
    try:
        import uv  # the PyPI package: its wheel carries the binary

        path = str(uv.find_uv_bin())
        if os.access(path, os.X_OK):
            return path
    except (ImportError, FileNotFoundError):
        pass
    return shutil.which("uv")


def plan_install(detection: Detection, setup: list[str] | None, *,
                 uv: str | None, poetry: str | None = _FIND) -> InstallPlan:
    """The install step: the spec's ``setup`` if given, else the detected install commands.

    With uv available, detected ``python -m pip install …`` steps run as ``uv pip install
    …`` (same arguments, into the run's venv). ``poetry …`` steps name ``poetry`` by its
    absolute path (default: :func:`poetry_binary`; left as is when there is none, so the
    step fails as a missing command). A run gets a venv when Python is detected or when
    the spec gives its own setup (its commands may well call pip).
    """
    if poetry == _FIND:
        poetry = poetry_binary()
    installer = "uv" if uv else "pip"
    if setup is not None:
        return InstallPlan(venv_steps=[], steps=list(setup), source="spec", venv=True,
                           inputs=detection.install_inputs, installer=installer)
    venv_steps: list[str] = []
    steps: list[str] = []
    node: NodeInstall | None = None
    for tc in detection.toolchains:
        if tc.name == "node" and node is None and len(tc.install) == 1:
            root = "" if tc.root in ("", ".") else tc.root.rstrip("/") + "/"
            node = NodeInstall(step=tc.install[0], manager=tc.manager,
                               modules=f"{root}node_modules", inputs=list(tc.install_inputs))
        for step in tc.install if tc.name in ("python", "node") else []:
            if uv and _PIP_INSTALL in step:
                step = step.replace(_PIP_INSTALL, f"{_quote(uv)} pip install ")
            if uv and (step.startswith("uv ") or " && uv " in step):
                step = step.replace("uv ", f"{_quote(uv)} ", 1) if step.startswith("uv ") \
                    else step.replace(" && uv ", f" && {_quote(uv)} ", 1)
            if poetry and (step.startswith("poetry ") or " && poetry " in step):
                step = step.replace("poetry ", f"{_quote(poetry)} ", 1) \
                    if step.startswith("poetry ") \
                    else step.replace(" && poetry ", f" && {_quote(poetry)} ", 1)
            target = venv_steps if tc.name == "python" else steps
            if step not in target:
                target.append(step)
    return InstallPlan(venv_steps=venv_steps, steps=steps,
                       source="detected" if venv_steps or steps else "none",
                       venv=detection.env == "venv", inputs=detection.install_inputs,
                       installer=installer, node=node)


def _quote(path: str) -> str:
    import shlex

    return shlex.quote(path)


def _hash_inputs(h: Any, root: Path, inputs: Iterable[str]) -> None:
    """Feed each install input's name and content digest (in name order) into ``h``."""
    for rel in sorted(inputs):
        try:
            data = (root / rel).read_bytes()
        except OSError:
            data = b"<missing>"
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())


def cache_key(worktree: Path, plan: InstallPlan, python: str) -> str:
    """sha256 of what decides a ready environment: interpreter, installer, steps, inputs."""
    h = hashlib.sha256()
    real = os.path.realpath(python)
    h.update(f"{real}\0{sys.version_info[:2]}\0{plan.installer}\0".encode())
    for step in plan.venv_steps + plan.steps:
        h.update(step.encode() + b"\0")
    _hash_inputs(h, worktree, plan.inputs)
    return h.hexdigest()[:32]


def node_cache_key(cwd: Path, node: NodeInstall, env: dict[str, str]) -> str | None:
    """sha256 of what decides a ready ``node_modules``: node's and the manager's versions,
    the command, package.json and the lockfile; None when a version cannot be read."""
    h = hashlib.sha256(b"node\0" + node.step.encode() + b"\0")
    for tool in ("node", node.manager):
        try:
            done = subprocess.run([tool, "--version"], capture_output=True, text=True,
                                  timeout=60, check=False, env=env, cwd=cwd)
        except (OSError, subprocess.SubprocessError):
            return None
        if done.returncode != 0:
            return None
        h.update(f"{tool}={done.stdout.strip()}\0".encode())
    _hash_inputs(h, cwd, node.inputs)
    return h.hexdigest()[:32]


class EnvCache:
    """Ready environments under ``root`` (``<state>/envcache``), keyed by :func:`cache_key`.

    Blocking file work: call from a worker thread.
    """

    def __init__(self, root: Path, keep: int = _KEEP) -> None:
        self.root = root
        self.keep = keep

    def has(self, key: str) -> bool:
        return (self.root / key / _META).is_file()

    def store(self, key: str, venv: Path, worktree: Path) -> bool:
        """Copy the ready ``venv`` (built for ``worktree``) in as ``key``; False if it fails."""
        if self.has(key):
            return True
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{key}.{os.getpid()}.{time.monotonic_ns()}"
        try:
            _copy_tree(venv, tmp)
            manifest = _seal(tmp)
            meta = {"venv": str(venv), "worktree": str(worktree), "created": time.time(),
                    "files": manifest}
            (tmp / _META).write_text(json.dumps(meta))
            os.rename(tmp, self.root / key)
        except OSError as exc:
            LOGGER.warning("cannot keep ready environment %s: %s", key, exc)
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        self._prune()
        return True

    def clone(self, key: str, venv: Path, worktree: Path, *, rewrite: bool = True) -> bool:
        """Make ``venv`` a copy of the ready environment ``key`` for ``worktree``
        (a ``node_modules`` too: ``rewrite=False``, it holds no absolute paths)."""
        src = self.root / key
        try:
            meta = json.loads((src / _META).read_text())
            changed = _changed(src, meta["files"])
            if changed:
                LOGGER.warning("ready environment %s was written in place (%s): dropped",
                               key, changed)
                shutil.rmtree(src, ignore_errors=True)
                return False
            shutil.rmtree(venv, ignore_errors=True)
            venv.parent.mkdir(parents=True, exist_ok=True)
            _copy_tree(src, venv, link=True)
            (venv / _META).unlink()  # only the link: the entry keeps its own
            if rewrite:
                _rewrite_paths(venv, {meta["venv"]: str(venv),
                                      meta["worktree"]: str(worktree)})
            os.utime(src)  # most recently used
        except (OSError, ValueError, KeyError) as exc:
            LOGGER.warning("cannot reuse ready environment %s: %s", key, exc)
            shutil.rmtree(venv, ignore_errors=True)
            return False
        return True

    def _prune(self) -> None:
        try:
            entries = sorted((p for p in self.root.iterdir() if not p.name.startswith(".")),
                             key=lambda p: p.stat().st_mtime, reverse=True)
        except OSError:
            return
        for old in entries[self.keep:]:
            shutil.rmtree(old, ignore_errors=True)


def _copy_tree(src: Path, dst: Path, *, link: bool = False) -> None:
    """``cp -a``: hardlinked files in new directories with ``link``, else a copy
    (copy-on-write where the file system can)."""
    how = "-l" if link else "--reflink=auto"
    done = subprocess.run(["cp", "-a", how, str(src), str(dst)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise OSError(done.stderr.strip() or f"cp exited {done.returncode}")


def _seal(root: Path) -> dict[str, list[int]]:
    """Make every regular file under ``root`` read-only; return {path: [size, mtime_ns]}."""
    manifest: dict[str, list[int]] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            os.chmod(path, st.st_mode & ~0o222)
            manifest[os.path.relpath(path, root)] = [st.st_size, st.st_mtime_ns]
    return manifest


def _changed(root: Path, manifest: dict[str, list[int]]) -> str | None:
    """The first file of ``manifest`` whose size or mtime differ now (or that is gone)."""
    for rel, (size, mtime) in manifest.items():
        try:
            st = os.lstat(root / rel)
        except OSError:
            return rel
        if st.st_size != size or st.st_mtime_ns != mtime:
            return rel
    return None


def _rewrite_paths(venv: Path, mapping: dict[str, str]) -> None:
    """Replace absolute paths of the building run in the files that hold them."""
    pairs = [(old.encode(), new.encode()) for old, new in mapping.items() if old != new]
    if not pairs:
        return
    candidates = [p for p in (venv / "bin").iterdir() if p.is_file() and not p.is_symlink()]
    candidates.append(venv / "pyvenv.cfg")
    for site in venv.glob("lib/python*/site-packages"):
        candidates += [p for p in site.iterdir() if p.is_file() and p.suffix in (".pth", ".py")]
        candidates += list(site.glob("*.dist-info/direct_url.json"))
        candidates += list(site.glob("*.dist-info/RECORD"))
    for path in candidates:
        try:
            if path.stat().st_size > 4 * 1024 * 1024:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if b"\0" in data[:1024]:
            continue  # a binary (uv's launcher, a compiled tool)
        new = data
        for old, repl in pairs:
            new = new.replace(old, repl)
        if new != data:
            mode = path.stat().st_mode
            tmp = path.with_name(path.name + ".autopack-tmp")
            tmp.write_bytes(new)
            os.chmod(tmp, mode)
            os.replace(tmp, path)


def venv_command(venv: Path, python: str, uv: str | None) -> list[str]:
    """The argv that creates an empty virtualenv (with pip, for fixes) at ``venv``."""
    if uv:
        return [uv, "venv", "--quiet", "--seed", "--python", python, str(venv)]
    return [python, "-m", "venv", "--clear", str(venv)]


def install_env(env: dict[str, str], venv: Path | None, state_dir: Path) -> dict[str, str]:
    """``env`` for the install step: tool caches under ``<state>/cache``, uv copying from its
    cache (never hardlinks into a run's venv), uv aimed at the run's venv."""
    out = dict(env)
    caches = state_dir / "cache"
    out.setdefault("UV_CACHE_DIR", str(caches / "uv"))
    out.setdefault("PIP_CACHE_DIR", str(caches / "pip"))
    out["UV_LINK_MODE"] = "copy"
    # poetry: its caches beside uv's, never a prompt, never a keyring (a desktop keyring
    # would wait for an unlock dialog nobody sees), never a virtualenv of its own (it
    # installs into the active one, the run's)
    out.setdefault("POETRY_CACHE_DIR", str(caches / "poetry"))
    out["POETRY_NO_INTERACTION"] = "1"
    out["POETRY_VIRTUALENVS_CREATE"] = "false"
    out.setdefault("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    if venv is not None:
        out["UV_PROJECT_ENVIRONMENT"] = str(venv)
    return out

"""The environment a run's commands see, and the run's own Python virtualenv.

Secrets of the daemon (the API key, credentials paths) never reach checks or
the Builder's commands. A run's virtualenv lives outside its worktree
(``<state>/envs/<run-id>``) so ``git clean`` never touches it and nothing a
run installs lands in another run or in the daemon.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import anyio

_SECRET_PREFIXES = ("ANTHROPIC_", "AUTOPACK_", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET",
                    "LISTEN_", "WATCHDOG_", "JOURNAL_STREAM", "INVOCATION_ID")


def base_env(source: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``source`` (default ``os.environ``) without the daemon's secrets and
    systemd plumbing, and without the daemon's own virtualenv on PATH."""
    src = os.environ if source is None else source
    env = {k: v for k, v in src.items() if not k.startswith(_SECRET_PREFIXES)}
    daemon_venv = env.pop("VIRTUAL_ENV", None)
    if daemon_venv:
        parts = [p for p in env.get("PATH", "").split(os.pathsep)
                 if not p.startswith(daemon_venv)]
        env["PATH"] = os.pathsep.join(parts)
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # pytest's cache would land in the worktree and be committed with the phase
    addopts = env.get("PYTEST_ADDOPTS", "")
    if "no:cacheprovider" not in addopts:
        env["PYTEST_ADDOPTS"] = f"{addopts} -p no:cacheprovider".strip()
    return env


def with_venv(env: Mapping[str, str], venv: Path) -> dict[str, str]:
    """``env`` with ``venv`` activated (bin first on PATH, VIRTUAL_ENV set)."""
    out = dict(env)
    out["VIRTUAL_ENV"] = str(venv)
    out["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return out


def system_python() -> str:
    """The interpreter runs' venvs are made from: the base Python, not autopack's venv."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return base if os.path.exists(base) else (shutil.which("python3") or sys.executable)


def run_env_dir(state_dir: Path, run_id: str) -> Path:
    """Where run ``run_id``'s own environment (its Python virtualenv) lives.

    Writable by the run's commands (install, checks, the Builder's bash, fixes); removed
    with the run's worktree. Ready copies are kept apart in :func:`env_cache_dir`, tool
    caches (uv, pip) in :func:`tool_cache_dir`.
    """
    return state_dir / "envs" / run_id


def env_cache_dir(state_dir: Path) -> Path:
    """Ready environments, keyed by install inputs; only the daemon reads and writes them."""
    return state_dir / "envcache"


def tool_cache_dir(state_dir: Path) -> Path:
    """uv's and pip's download caches, written by install steps (``UV_CACHE_DIR`` …)."""
    return state_dir / "cache"


async def ensure_venv(venv: Path) -> Path:
    """Create the run's virtualenv if missing; returns its ``python``.

    No system site-packages: the run sees only what its install step put there (the
    machine's packages once made a check import another copy of the project). Seeded
    with pip, which fixes install with. uv makes it when available (tens of
    milliseconds), else ``python -m venv``.
    """
    from ._install import uv_binary, venv_command

    python = venv / "bin" / "python"
    if not await anyio.Path(python).exists():
        await anyio.Path(venv.parent).mkdir(parents=True, exist_ok=True)
        uv = uv_binary()
        done = await anyio.run_process(venv_command(venv, system_python(), uv), check=False)
        if done.returncode != 0 and uv:  # offline without pip in uv's cache: the stdlib way
            await anyio.run_process(venv_command(venv, system_python(), None), check=True)
        elif done.returncode != 0:
            raise OSError(f"cannot create a virtualenv at {venv}: "
                          f"{done.stderr.decode(errors='replace').strip()[-300:]}")
    return python

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


async def ensure_venv(venv: Path) -> Path:
    """Create the run's virtualenv if missing; returns its ``python``.

    ``--system-site-packages`` lets checks use the tools the machine already has
    (pytest, …) while everything the run installs goes into the venv only.
    """
    python = venv / "bin" / "python"
    if not await anyio.Path(python).exists():
        await anyio.Path(venv.parent).mkdir(parents=True, exist_ok=True)
        args = [system_python(), "-m", "venv", "--system-site-packages"]
        if await _base_has_pip():
            # the base pip, seen through system site-packages, installs into the venv;
            # skipping ensurepip makes a venv in ~0.3 s instead of several seconds
            args.append("--without-pip")
        await anyio.run_process([*args, str(venv)], check=True)
    return python


_PIP_PROBE: dict[str, bool] = {}


async def _base_has_pip() -> bool:
    base = system_python()
    if base not in _PIP_PROBE:
        proc = await anyio.run_process([base, "-c", "import pip"], check=False)
        _PIP_PROBE[base] = proc.returncode == 0
    return _PIP_PROBE[base]

"""Acting on a mitigation: install a missing dependency into the run's own environment, or wait.

The one impure part of the classifier. Every action is

- *allowed*: the pattern id is in ``allowed`` (the ``auto_mitigate`` setting);
- *once*: its key (``action_key``) is not in ``already`` (the keys this phase
  has done), so the same package is never installed twice in a phase;
- *bounded*: the installer runs under a timeout, a wait is capped;
- *contained*: pip runs as ``<venv>/bin/python -m pip`` of the run's own venv
  (refused when the interpreter is not a venv's) with ``PIP_REQUIRE_VIRTUALENV``;
  npm/yarn/pnpm run in the worktree, and only when it has its own
  ``package.json`` (npm would otherwise walk up and modify a parent project).
  Package names are validated, so a crafted module name cannot smuggle options.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import msgspec
from autopack.protocol import Classification

LOGGER = logging.getLogger(__name__)

INSTALL_TIMEOUT_S = 300.0
MAX_WAIT_S = 300.0
_OUTPUT_TAIL = 4000

_PY_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_NPM_NAME = re.compile(r"^(?:@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*$")
_NODE_MANAGERS = {"npm": ["npm", "install", "--no-audit", "--no-fund"], "yarn": ["yarn", "add"], "pnpm": ["pnpm", "add"]}


class ActionResult(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`apply_mitigation` did.

    ``acted`` is False when nothing was attempted (not allowed, already done,
    nothing to do); ``ok`` says whether an attempted action succeeded.
    ``key`` identifies the action (add it to the phase's ``already`` set);
    ``undeclared`` names an installed dependency the repository's manifest
    does not declare (tell the next Builder attempt to declare it).
    """

    acted: bool
    ok: bool
    summary: str
    key: str | None = None
    undeclared: str | None = None
    output: str = ""  # tail of the installer's output


def action_key(c: Classification) -> str | None:
    """Identity of the action a classification asks for (``None`` when it asks for none)."""
    m = c.mitigation
    if m is None or c.pattern is None:
        return None
    if m.kind == "install_dependency" and m.package:
        return f"install:{m.manager or 'pip'}:{m.package.lower()}"
    if m.kind == "wait":
        return f"wait:{c.pattern}"
    return None


async def apply_mitigation(
    c: Classification,
    *,
    worktree: Path,
    python: Path | None,
    env: Mapping[str, str],
    allowed: set[str],
    already: set[str],
    timeout_s: float = INSTALL_TIMEOUT_S,
    max_wait_s: float = MAX_WAIT_S,
    box: Any = None,
) -> ActionResult:
    """Carry out ``c``'s mitigation if it is an action, allowed, and not done yet in this phase.

    Never raises for a failed action (the result says so); cancellation
    propagates (a running installer is killed by anyio).
    """
    m = c.mitigation
    key = action_key(c)
    if m is None or key is None or c.pattern is None:
        return ActionResult(acted=False, ok=False, summary="no action for this classification")
    if c.pattern not in allowed:
        return ActionResult(acted=False, ok=False, key=key, summary=f"{c.pattern} is not in auto_mitigate")
    if key in already:
        return ActionResult(acted=False, ok=False, key=key, summary=f"already done in this phase: {key}")
    if m.kind == "wait":
        seconds = max(0.0, min(float(m.wait_s or 0.0), max_wait_s))
        LOGGER.info("mitigation %s: waiting %.1f s", c.pattern, seconds)
        await anyio.sleep(seconds)
        return ActionResult(acted=True, ok=True, key=key, summary=f"waited {seconds:g} s")
    assert m.package is not None
    if (m.manager or "pip") in ("pip", "uv"):
        return await _pip_install(m.package, key, worktree, python, env, timeout_s, box)
    return await _node_install(m.package, m.manager or "npm", key, worktree, env, timeout_s, box)


def _venv_root(python: Path) -> Path | None:
    """The venv directory owning interpreter ``python`` (``<venv>/bin/python``), or None."""
    root = python.parent.parent
    return root if (root / "pyvenv.cfg").is_file() else None


async def _pip_install(
    dist: str, key: str, worktree: Path, python: Path | None, env: Mapping[str, str], timeout_s: float,
    box: Any = None,
) -> ActionResult:
    if not _PY_NAME.match(dist):
        return ActionResult(acted=False, ok=False, key=key, summary=f"refusing suspicious distribution name {dist!r}")
    if python is None or _venv_root(Path(python)) is None:
        return ActionResult(acted=False, ok=False, key=key, summary="no run venv to install into; refusing to touch another environment")
    venv = _venv_root(Path(python))
    full_env = {**env, "PIP_REQUIRE_VIRTUALENV": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1",
                "VIRTUAL_ENV": str(venv)}
    cmd = [str(python), "-m", "pip", "install", dist]
    result = await _run(cmd, worktree, full_env, timeout_s, key, f"pip install {dist} into {venv}", box)
    if result.ok and undeclared_dependency(worktree, dist):
        return msgspec.structs.replace(result, undeclared=dist)
    return result


async def _node_install(
    pkg: str, manager: str, key: str, worktree: Path, env: Mapping[str, str], timeout_s: float,
    box: Any = None,
) -> ActionResult:
    if manager not in _NODE_MANAGERS:
        return ActionResult(acted=False, ok=False, key=key, summary=f"unknown package manager {manager!r}")
    if not _NPM_NAME.match(pkg):
        return ActionResult(acted=False, ok=False, key=key, summary=f"refusing suspicious package name {pkg!r}")
    if not (worktree / "package.json").is_file():
        return ActionResult(acted=False, ok=False, key=key, summary="no package.json in the worktree; not installing")
    cmd = [*_NODE_MANAGERS[manager], pkg]
    result = await _run(cmd, worktree, dict(env), timeout_s, key, f"{manager} add {pkg}", box)
    # npm/yarn/pnpm add the package to package.json themselves; report it anyway when they did not.
    if result.ok and undeclared_dependency(worktree, pkg):
        return msgspec.structs.replace(result, undeclared=pkg)
    return result


async def _run(cmd: list[str], cwd: Path, env: Mapping[str, str], timeout_s: float, key: str, what: str,
               box: Any = None) -> ActionResult:
    """Run an install command like every command of a run: through ``run_command``, in the
    run's sandbox ``box`` as an install step (network as the run's policy allows)."""
    from .._proc import run_command
    from .._sandbox import SandboxUnavailable

    LOGGER.info("mitigation: %s", what)
    try:
        result = await run_command(shlex.join(cmd), cwd=cwd, env=env, timeout_s=timeout_s,
                                   max_output=_OUTPUT_TAIL * 2, box=box, step="install")
    except (OSError, SandboxUnavailable) as exc:
        return ActionResult(acted=True, ok=False, key=key, summary=f"{what}: {exc}")
    if result.timed_out:
        return ActionResult(acted=True, ok=False, key=key, summary=f"{what}: timed out after {timeout_s:g} s")
    out = result.output[-_OUTPUT_TAIL:]
    ok = result.exit_code == 0
    status = "done" if ok else f"failed with exit status {result.exit_code}"
    return ActionResult(acted=True, ok=ok, key=key, summary=f"{what}: {status}", output=out)


# --------------------------------------------------------------- manifests

def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _req_names(lines: list[str]) -> set[str]:
    names = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = _REQ_NAME.match(line)
        if m:
            names.add(_norm(m.group(1)))
    return names


def declared_dependencies(worktree: Path) -> set[str] | None:
    """Normalized names declared by the repository's manifests, or None when it has none.

    Reads ``pyproject.toml`` (PEP 621 dependencies, optional dependencies,
    dependency groups, Poetry), ``requirements*.txt``, ``setup.cfg``
    ``install_requires`` and ``package.json`` (all dependency sections).
    """
    names: set[str] = set()
    found = False
    pyproject = worktree / "pyproject.toml"
    if pyproject.is_file():
        found = True
        try:
            data = tomllib.loads(pyproject.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            data = {}
        project = data.get("project", {})
        reqs = list(project.get("dependencies", []))
        for group in project.get("optional-dependencies", {}).values():
            reqs.extend(group)
        for group in data.get("dependency-groups", {}).values():
            reqs.extend(x for x in group if isinstance(x, str))
        names |= _req_names(reqs)
        poetry = data.get("tool", {}).get("poetry", {})
        for section in ("dependencies", "dev-dependencies"):
            names |= {_norm(k) for k in poetry.get(section, {})}
        for group in poetry.get("group", {}).values():
            names |= {_norm(k) for k in group.get("dependencies", {})}
    for req in sorted(worktree.glob("requirements*.txt")) + sorted(worktree.glob("requirements/*.txt")):
        found = True
        try:
            names |= _req_names(req.read_text().splitlines())
        except OSError:
            pass
    setup_cfg = worktree / "setup.cfg"
    if setup_cfg.is_file():
        found = True
        text = setup_cfg.read_text(errors="replace")
        m = re.search(r"install_requires\s*=\s*\n((?:[ \t]+.*\n?)+)", text)
        if m:
            names |= _req_names(m.group(1).splitlines())
    package_json = worktree / "package.json"
    if package_json.is_file():
        found = True
        try:
            pkg = json.loads(package_json.read_text())
        except (OSError, ValueError):
            pkg = {}
        for section in ("dependencies", "devDependencies", "peerDependencies", "optionalDependencies"):
            names |= {k.lower() for k in (pkg.get(section) or {})}
    return names if found else None


def undeclared_dependency(worktree: Path, dist: str) -> bool:
    """True when ``dist`` is missing from the repository's dependency manifests (or there are none)."""
    declared = declared_dependencies(worktree)
    if declared is None:
        return True
    return _norm(dist) not in declared and dist.lower() not in declared

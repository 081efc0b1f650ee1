"""Benchmark: submit → first test, cold environment vs ready one; and uv vs pip.

Usage::

    .venv/bin/python bench/start_to_test.py [--cold 2] [--ready 5] [--reps 2] [--json]

A src-layout project with a ``test`` extra (``pip install -e '.[test]'``
brings pytest) and one test, in a real git repository; a real ``autopackd``
with ``kind = "command"`` phases whose checks are detected (pytest). Installs
come from a local wheelhouse rebuilt from this interpreter's installed pytest,
setuptools, pip … (``tests/_wheels.py``): no network, so the figures measure
autopack and the installer, not the registry.

* *start to first test*: ``time.time()`` just before Submit → the project's
  ``conftest.py`` stamping the moment pytest loads it (the first test is about
  to be collected). **Cold**: the install inputs are new (``pyproject.toml``
  changes before each cold run), so the environment is made and filled.
  **Ready**: same inputs as an earlier run, so a ready copy is reused.
  Target: ready ≤ 1 s.
* *uv vs pip*, outside the daemon, same project and wheelhouse: make an empty
  virtualenv with pip in it (``uv venv --seed`` vs ``python -m venv``), then
  fill it (``uv pip install -e '.[test]'`` vs ``pip install -e '.[test]'``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import BenchDaemon, emit, git, machine, wait_until, workspace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from autopack.actors._env import system_python  # noqa: E402
from autopack.actors._install import uv_binary  # noqa: E402
from autopack.protocol import GetStatus, Submit, parse_spec_text  # noqa: E402

from tests._wheels import build_wheelhouse, offline_env  # noqa: E402

PYPROJECT = """[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"
[project]
name = "benchcalc"
version = "{version}"
[project.optional-dependencies]
test = ["pytest"]
[tool.setuptools.packages.find]
where = ["src"]
"""


def make_project(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "pyproject.toml").write_text(PYPROJECT.format(version="1.0"))
    (path / "src/benchcalc").mkdir(parents=True)
    (path / "src/benchcalc/__init__.py").write_text("def add(a, b):\n    return a + b\n")
    (path / "tests").mkdir()
    (path / "tests/test_add.py").write_text(
        "from benchcalc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n")
    # the run's environment is the one place outside the worktree a sandboxed check may
    # write that the host sees at the same path
    (path / "conftest.py").write_text(
        "import os, time\n\nmark = os.path.join(os.environ['VIRTUAL_ENV'], 'bench-mark')\n"
        "with open(mark + '.tmp', 'w') as f:\n    f.write(repr(time.time()))\n"
        "os.replace(mark + '.tmp', mark)\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def one_run(d: BenchDaemon, repo: Path, i: int) -> tuple[float, bool]:
    spec = parse_spec_text(f'goal = "start to test {i}"\n[[phases]]\nid = "t"\ngoal = "tests"\n'
                           'kind = "command"\n', fmt="toml")
    with d.client() as c:
        t0 = time.time()
        run_id = c.request(Submit(spec=spec, repo=str(repo))).run_id
        mark = d.state_dir / "envs" / run_id / "bench-mark"
        seen: list[float] = []

        def stamped() -> bool:
            try:
                seen.append(float(mark.read_text()))
            except (OSError, ValueError):
                return False
            return True

        wait_until(stamped, 300, 0.002, f"run {i}: pytest started")
        started = seen[0]
        state = ""

        def ended() -> bool:
            nonlocal state
            state = c.request(GetStatus(run_id=run_id)).state
            return state in ("succeeded", "failed", "cancelled")

        wait_until(ended, 300, 0.02, f"run {i} ended")
    if state != "succeeded":
        raise RuntimeError(f"run {run_id} ended {state}: see {d.log}")
    reused = '"reused": true' in subprocess.run(
        [sys.executable, "-m", "autopack.daemon.ctl._main", "--socket", d.socket, "logs", run_id,
         "--json"], capture_output=True, text=True).stdout
    return started - t0, reused


def bench_daemon(root: Path, wheels: Path, cold: int, ready: int) -> dict[str, Any]:
    repo = make_project(root / "repo")
    cold_s: list[float] = []
    ready_s: list[float] = []
    env = offline_env(wheels)
    # the wheelhouse sits in the host's /tmp: the operator lets sandboxes read it
    with BenchDaemon(root, "start", max_concurrent_runs=1,
                     sandbox_read_only=[str(wheels)]) as d:
        _spawn_with_env(d, env)
        for i in range(cold):
            (repo / "pyproject.toml").write_text(PYPROJECT.format(version=f"1.{i + 1}"))
            git(repo, "commit", "-qam", f"inputs {i}")
            s, reused = one_run(d, repo, i)
            assert not reused, "a cold run reused an environment"
            cold_s.append(s)
        for i in range(ready):
            s, reused = one_run(d, repo, cold + i)
            assert reused, "a ready run installed from scratch"
            ready_s.append(s)
        d.stop()
    return {"cold_s": [round(x, 3) for x in cold_s], "ready_s": [round(x, 3) for x in ready_s],
            "cold_median_s": round(statistics.median(cold_s), 3),
            "ready_median_s": round(statistics.median(ready_s), 3)}


def _spawn_with_env(d: BenchDaemon, env: dict[str, str]) -> None:
    import os

    d.state_dir.mkdir(parents=True, exist_ok=True)
    logf = open(d.log, "ab")  # noqa: SIM115 - the daemon writes to it until it stops
    d.proc = subprocess.Popen([str(Path(sys.executable).parent / "autopackd"), "--config",
                               str(d.config_path)], stdout=logf, stderr=subprocess.STDOUT,
                              env={**os.environ, **env, "ANTHROPIC_API_KEY": ""},
                              start_new_session=True)
    logf.close()
    d.wait_serving()


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def _pytest_floor(venv: Path, project: Path, env: dict[str, str], n: int = 3) -> float:
    """Spawn → conftest stamp of the same pytest in a ready venv, no daemon: the floor."""
    times = []
    for _ in range(n):
        mark = venv / "bench-mark"
        mark.unlink(missing_ok=True)
        t0 = time.time()
        subprocess.run([str(venv / "bin/python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                       cwd=project, env=env, check=True, capture_output=True)
        times.append(float(mark.read_text()) - t0)
    return round(statistics.median(times), 3)


def bench_installers(root: Path, wheels: Path, reps: int) -> dict[str, Any]:
    import os

    uv = uv_binary()
    py = system_python()
    project = root / "repo"
    base = {**os.environ, **offline_env(wheels), "UV_LINK_MODE": "copy",
            "UV_CACHE_DIR": str(root / "uvcache")}
    base.pop("VIRTUAL_ENV", None)
    out: dict[str, Any] = {}
    for name in ("uv", "pip"):
        if name == "uv" and not uv:
            continue
        create: list[float] = []
        fill: list[float] = []
        for r in range(reps):
            venv = root / f"venv-{name}-{r}"
            env = {**base, "VIRTUAL_ENV": str(venv)}
            if name == "uv":
                assert uv is not None
                create.append(_timed([uv, "venv", "-q", "--seed", "--python", py, str(venv)],
                                     project, env))
                fill.append(_timed([uv, "pip", "install", "-q", "-e", ".[test]"], project, env))
                if r == 0:
                    out["floor_s"] = _pytest_floor(venv, project, env)
            else:
                create.append(_timed([py, "-m", "venv", str(venv)], project, env))
                fill.append(_timed([str(venv / "bin/python"), "-m", "pip", "install", "-q", "-e",
                                    ".[test]"], project, env))
            shutil.rmtree(venv)
        out[name] = {"create_s": round(statistics.median(create), 3),
                     "fill_s": round(statistics.median(fill), 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cold", type=int, default=2)
    ap.add_argument("--ready", type=int, default=5)
    ap.add_argument("--reps", type=int, default=2, help="uv vs pip repetitions")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with workspace("start-to-test") as root:
        wheels = build_wheelhouse(root / "wheels")
        daemon = bench_daemon(root, wheels, args.cold, args.ready)
        installers = bench_installers(root, wheels, args.reps)
    result = {"bench": "start_to_test", "machine": machine(), "daemon": daemon,
              "installers": installers, "target": {"ready_s": 1.0},
              "met": daemon["ready_median_s"] <= 1.0}
    lines = [
        "submit → first test (pytest loads the project's conftest), src-layout project with a "
        "test extra:",
        f"  cold environment (new install inputs): median {daemon['cold_median_s']:.2f} s  "
        f"{daemon['cold_s']}",
        f"  ready environment (reused copy):       median {daemon['ready_median_s']:.2f} s  "
        f"{daemon['ready_s']}   (target ≤ 1 s)",
        f"  → ready is {daemon['cold_median_s'] / daemon['ready_median_s']:.1f}× faster than cold",
        f"  floor: the same pytest started by hand in a ready venv: {installers.get('floor_s', 0):.2f} s",
        "make an empty venv with pip / fill it with -e '.[test]' (median of "
        f"{args.reps}, same wheelhouse):",
    ]
    for name, fig in installers.items():
        if name == "floor_s":
            continue
        lines.append(f"  {name:<4} create {fig['create_s']:.2f} s   fill {fig['fill_s']:.2f} s")
    if "uv" in installers and "pip" in installers:
        u, p = installers["uv"], installers["pip"]
        lines.append(f"  → uv is {(p['create_s'] + p['fill_s']) / (u['create_s'] + u['fill_s']):.1f}× "
                     "faster than pip (create + fill)")
    emit(result, args.json, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

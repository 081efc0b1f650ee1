"""Sandbox overhead per command: ``true`` through ``run_command`` inside a run's bubblewrap
sandbox vs the same call bare, interleaved in the same process, median of N each.

    .venv/bin/python bench/sandbox.py [--n 50] [--json]

Both go through the same code path (``autopack.actors._proc.run_command``: own
session, captured output, process-group kill at the end); the only difference is
the run's ``RunBox`` (bwrap argv with the full mount set, the watcher and the
ulimits). The sandbox is the one a daemon would build for a run on a real git
worktree under a temporary state dir.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from autopack.actors._proc import run_command
from autopack.actors._sandbox import Sandbox, probe

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@l",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@l"}


def _setup(root: Path) -> tuple[Path, Path, Path]:
    repo = root / "repo"
    repo.mkdir()
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, check=True)
    state = root / "state"
    wt = state / "worktrees" / "r1"
    wt.parent.mkdir(parents=True)
    subprocess.run(["git", "worktree", "add", "-q", "-b", "b1", str(wt)], cwd=repo, env=GIT_ENV,
                   check=True)
    (state / "tmp" / "r1").mkdir(parents=True)
    (state / "envs" / "r1").mkdir(parents=True)
    return repo, state, wt


async def _measure(n: int, root: Path) -> dict[str, object]:
    repo, state, wt = _setup(root)
    found = probe("auto")
    if found.mode != "bwrap":
        raise SystemExit(f"sandbox unavailable: {found.detail}")
    box = Sandbox(probe=found, state_dir=state).box(
        worktree=wt, scratch=state / "tmp" / "r1", writable=[state / "envs" / "r1"],
        readonly=[repo / ".git"])
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    bare: list[float] = []
    boxed: list[float] = []
    for _ in range(3):  # warm caches of both paths
        await run_command("true", cwd=wt, env=env)
        await run_command("true", cwd=wt, env=env, box=box)
    for _ in range(n):  # interleaved: both see the same machine load
        t = time.perf_counter()
        r = await run_command("true", cwd=wt, env=env)
        bare.append(time.perf_counter() - t)
        assert r.exit_code == 0, r.output
        t = time.perf_counter()
        r = await run_command("true", cwd=wt, env=env, box=box)
        boxed.append(time.perf_counter() - t)
        assert r.exit_code == 0, r.output
    b_ms, s_ms = statistics.median(bare) * 1000, statistics.median(boxed) * 1000
    return {"n": n, "bare_median_ms": round(b_ms, 2), "sandbox_median_ms": round(s_ms, 2),
            "overhead_ms": round(s_ms - b_ms, 2), "ratio": round(s_ms / b_ms, 2),
            "flags": found.detail}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="autopack-bench-sandbox-") as tmp:
        result = anyio.run(_measure, args.n, Path(tmp), backend="trio")
    if args.json:
        print(json.dumps(result))
    else:
        print(f"`true` x{result['n']}: bare median {result['bare_median_ms']} ms, sandboxed "
              f"median {result['sandbox_median_ms']} ms: +{result['overhead_ms']} ms per "
              f"command, ratio {result['ratio']}x ({result['flags']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

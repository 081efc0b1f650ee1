"""Benchmark: ``autopackctl`` start-up as whole processes, against ``import msgspec``.

Usage::

    .venv/bin/python bench/ctl_startup.py [--reps 30] [--python PYTHON] [--json]

A real ``autopackd`` on a temp state dir, with five ended runs (so ``status`` and
``list`` have something to show). Then ``--reps`` rounds, interleaved so machine
load hits every command alike; each round runs, in a shuffled order, as fresh
processes (``subprocess.run``, wall clock around it):

* the floor: ``PYTHON -c "import msgspec"`` (the same interpreter as autopackctl),
* ``autopackctl --help``, ``autopackctl status latest``, ``autopackctl list``.

Prints min/median/max per command and the ratio of each median to the floor's
median. Target: every ratio ≤ 1.4.

``--python`` picks another environment (e.g. a venv with a regular, non-editable
``pip install .``): its ``autopackctl`` next to that interpreter is measured, the
daemon still comes from this one.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import BenchDaemon, command_spec, emit, machine, make_repo, workspace
from autopack.protocol import GetStatus, Submit

TARGET = 1.4


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return elapsed


def seed_runs(d: BenchDaemon, repo: Path, n: int) -> None:
    with d.client() as c:
        ids = [c.request(Submit(spec=command_spec([["true"]]), repo=str(repo))).run_id
               for _ in range(n)]
        for run_id in ids:
            while c.request(GetStatus(run_id=run_id)).state not in ("succeeded", "failed"):
                time.sleep(0.05)


def measure(python: str, reps: int) -> dict[str, Any]:
    ctl = str(Path(python).parent / "autopackctl")
    with workspace("ctl-startup") as root, BenchDaemon(root).start() as d:
        seed_runs(d, make_repo(root / "repo"), 5)
        env = {**os.environ, "AUTOPACK_SOCKET": d.socket}
        cases = {
            "floor: python -c 'import msgspec'": [python, "-c", "import msgspec"],
            "autopackctl --help": [ctl, "--help"],
            "autopackctl status latest": [ctl, "status", "latest"],
            "autopackctl list": [ctl, "list"],
        }
        for argv in cases.values():  # warm the page cache (and any bytecode cache)
            timed(argv, env)
        times: dict[str, list[float]] = {name: [] for name in cases}
        rng = random.Random(1)
        for _ in range(reps):
            order = list(cases)
            rng.shuffle(order)
            for name in order:
                times[name].append(timed(cases[name], env))
    floor = statistics.median(next(iter(times.values())))
    rows = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        rows[name] = {"min_ms": round(min(ts) * 1000, 1), "median_ms": round(med * 1000, 1),
                      "max_ms": round(max(ts) * 1000, 1), "ratio": round(med / floor, 2)}
    return {"python": python, "reps": reps, "target_ratio": TARGET, "commands": rows,
            "ok": all(r["ratio"] <= TARGET for r in rows.values()), "machine": machine()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter whose autopackctl is measured (default: this one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = measure(args.python, args.reps)
    lines = [f"autopackctl start-up, whole processes, {args.reps} interleaved rounds "
             f"({result['python']}; load {result['machine'].get('loadavg', '?')})",
             f"{'command':<36} {'min':>8} {'median':>8} {'max':>8}  ratio to floor"]
    for name, r in result["commands"].items():
        lines.append(f"{name:<36} {r['min_ms']:>6.1f}ms {r['median_ms']:>6.1f}ms "
                     f"{r['max_ms']:>6.1f}ms  {r['ratio']:.2f}x")
    lines.append(f"target: every median within {TARGET}x of the floor: "
                 + ("met" if result["ok"] else "NOT met"))
    emit(result, args.json, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

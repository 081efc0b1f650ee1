"""Benchmark: submit → first check process started, against ``git clone`` and
``git worktree add``, interleaved in one process run, over several repetitions.

Usage::

    .venv/bin/python bench/start_overhead.py [--runs 20] [--reps 2] [--files 5000]
                                             [--tmpdir DIR] [--json]

A repository of N files (default 5,000) on the *system temp dir* (a real disk;
``--tmpdir /dev/shm`` for tmpfs; the bench prints ``df -T`` of where it ran).
Each repetition starts two real ``autopackd`` (``max_concurrent_runs = 1``): one
with the worktree pool (the default settings), one without it (every start is a
cold checkout). Then, ``runs + 1`` times (the first is a warm-up, not counted),
one after the other and interleaved so that both sides see the same disk:

1. **pooled**: submit to the pooled daemon; the run's only check is
   ``date +%s.%N > <mark>``, so "first check started" is stamped by the check
   itself; the next step waits until the run ended and cleaned up (its
   ``report_written`` event).
2. **cold**: the same, on the daemon without a pool.
3. **clone**: ``git clone /path`` into a fresh directory, then the same check
   there (local clone: objects hard-linked, the cheapest clone there is).
4. **worktree add**: ``git worktree add --detach`` of the same commit, then the
   same check (the floor of a cold start), removed afterwards.

Targets (issue 16): pooled median ≤ 150 ms, p90 ≤ 500 ms, ≥ 5× faster than
clone + check; cold start no slower than ``git worktree add``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import (
    BenchDaemon,
    Client,
    command_spec,
    disk_of,
    emit,
    machine,
    make_repo,
    percentile,
    spread,
    wait_until,
    workspace,
)
from autopack.protocol import GetStatus, Submit

TERMINAL = ("succeeded", "failed", "cancelled")


def read_mark(path: Path) -> float:
    return float(path.read_text().strip())


def daemon_run(d: BenchDaemon, c: Client, repo: Path, mark: Path) -> float:
    """One run through ``d``: seconds from submit to its check's own timestamp."""
    spec = command_spec([[f"date +%s.%N > {mark}.tmp && mv {mark}.tmp {mark}"]],
                        goal=f"start overhead {mark.name}")
    t0 = time.time()
    run_id = c.request(Submit(spec=spec, repo=str(repo))).run_id
    wait_until(mark.exists, 120, 0.002, f"check of {mark.name} started")
    started = read_mark(mark)
    state = ""

    def ended() -> bool:
        nonlocal state
        state = c.request(GetStatus(run_id=run_id)).state
        return state in TERMINAL

    wait_until(ended, 120, 0.01, f"run {mark.name} ended")
    if state != "succeeded":
        raise RuntimeError(f"run {run_id} ended {state}")
    # 'succeeded' is recorded before the worktree is recycled/removed; the slot frees after
    wait_until(lambda: "report_written" in d.event_kinds(run_id), 120, 0.01,
               f"run {mark.name} cleaned up")
    return started - t0


def clone_run(root: Path, repo: Path, mark: Path) -> float:
    dest = root / "clones" / mark.name
    t0 = time.time()
    subprocess.run(["git", "clone", "-q", str(repo), str(dest)], check=True, capture_output=True)
    subprocess.run(["sh", "-c", f"date +%s.%N > {mark}"], cwd=dest, check=True)
    started = read_mark(mark)
    shutil.rmtree(dest)
    return started - t0


def worktree_add_run(root: Path, repo: Path, mark: Path) -> float:
    dest = root / "wt-floor" / mark.name
    t0 = time.time()
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", "--detach", str(dest), "HEAD"],
                   check=True, capture_output=True)
    subprocess.run(["sh", "-c", f"date +%s.%N > {mark}"], cwd=dest, check=True)
    started = read_mark(mark)
    subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(dest)],
                   check=True, capture_output=True)
    return started - t0


def stats_ms(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {"median_ms": round(statistics.median(ms), 1), "p90_ms": round(percentile(ms, 90), 1),
            "max_ms": round(max(ms), 1)}


def one_repetition(root: Path, repo: Path, runs: int, rep: int) -> dict[str, dict[str, float]]:
    marks = root / f"marks-{rep}"
    marks.mkdir()
    times: dict[str, list[float]] = {"pooled": [], "cold": [], "clone": [], "worktree_add": []}
    # checks run in a sandbox with a private /tmp: the marks directory is shared explicitly
    shared = {"sandbox_writable": [str(marks)]}
    with BenchDaemon(root, f"pooled{rep}", max_concurrent_runs=1, **shared) as pooled, \
            BenchDaemon(root, f"cold{rep}", max_concurrent_runs=1, worktree_pool=False,
                        **shared) as cold:
        pooled.start()
        cold.start()
        with pooled.client() as cp, cold.client() as cc:
            steps: list[tuple[str, Callable[[Path], float]]] = [
                ("pooled", lambda m: daemon_run(pooled, cp, repo, m)),
                ("cold", lambda m: daemon_run(cold, cc, repo, m)),
                ("clone", lambda m: clone_run(root, repo, m)),
                ("worktree_add", lambda m: worktree_add_run(root, repo, m)),
            ]
            for i in range(runs + 1):  # run 0 warms up (page cache, git config, the pool)
                for name, step in steps:
                    took = step(marks / f"{name}-{i}")
                    if i:
                        times[name].append(took)
        pooled.stop()
        cold.stop()
    return {name: stats_ms(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--tmpdir", default=tempfile.gettempdir(),
                    help="where the repo, state dirs and clones live (default: the system temp "
                         "dir, a real disk here; /dev/shm for tmpfs)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    reps: list[dict[str, dict[str, float]]] = []
    with workspace("start", args.tmpdir) as root:
        disk = disk_of(root)
        repo = make_repo(root / "repo", args.files)
        for rep in range(args.reps):
            reps.append(one_repetition(root, repo, args.runs, rep))
    ratio = [r["clone"]["median_ms"] / r["pooled"]["median_ms"] for r in reps]
    cold_vs_floor = [r["cold"]["median_ms"] / r["worktree_add"]["median_ms"] for r in reps]
    agg = {name: {k: spread([r[name][k] for r in reps]) for k in ("median_ms", "p90_ms", "max_ms")}
           for name in reps[0]}
    result = {"bench": "start_overhead", "machine": machine(), "disk": disk, "runs": args.runs,
              "reps": args.reps, "files": args.files, "repetitions": reps, "over_reps": agg,
              "speedup_vs_clone": spread(ratio), "cold_over_worktree_add": spread(cold_vs_floor),
              "targets": {"median_ms": 150, "p90_ms": 500, "speedup": 5, "cold_over_worktree_add": 1.0},
              "met": {"median": all(r["pooled"]["median_ms"] <= 150 for r in reps),
                      "p90": all(r["pooled"]["p90_ms"] <= 500 for r in reps),
                      "speedup": min(ratio) >= 5}}
    lines = [f"submit → first check started; {args.runs} runs × {args.reps} repetitions, "
             f"{args.files}-file repository, interleaved",
             f"disk: {disk['df_T'] or disk['type']}",
             "                 median ms (min/med/max over reps)   p90 ms (min/med/max)"]
    for name in ("pooled", "cold", "worktree_add", "clone"):
        m, p = agg[name]["median_ms"], agg[name]["p90_ms"]
        lines.append(f"  {name:<14} {m['min']:8.1f} {m['median']:8.1f} {m['max']:8.1f}"
                     f"        {p['min']:8.1f} {p['median']:8.1f} {p['max']:8.1f}")
    sp, cw = result["speedup_vs_clone"], result["cold_over_worktree_add"]
    lines += [f"  pooled vs clone + check: {sp['min']:.1f}× / {sp['median']:.1f}× / {sp['max']:.1f}× "
              "faster (min/med/max; target ≥ 5×, median ≤ 150 ms, p90 ≤ 500 ms)",
              f"  cold start / git worktree add: {cw['min']:.2f} / {cw['median']:.2f} / "
              f"{cw['max']:.2f} (target ≤ 1 + the daemon's own bookkeeping)"]
    emit(result, args.json, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: submit → first check process started, against a fresh ``git clone``.

Usage::

    .venv/bin/python bench/start_overhead.py [--runs 20] [--files 5000] [--json]

A repository of N files (default 5,000) and a real ``autopackd``
(``max_concurrent_runs = 1``). For each of the runs, one after the other: take
``time.time()`` just before ``Submit``; the run's only check is
``date +%s.%N > <marks>/<i>`` (a file outside the worktree), so "first check
started" is stamped by the check process itself. The next run is submitted
after the previous one ended and its worktree was removed (its
``report_written`` event), so every run pays for a new worktree and none waits
for the slot.

Side by side, per run: ``git clone`` of the same repository into a fresh
directory, then the same check started there (``sh -c 'date …'`` with the clone
as its cwd), stamped the same way. Two clone flavours: a plain local clone
(``git clone /path``: objects hard-linked, the cheapest clone there is) and
``git clone file:///path`` (objects packed and copied, as from a server).

Targets: median ≤ 150 ms, and ≥ 5× faster than cloning.
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

from _common import (
    BenchDaemon,
    command_spec,
    emit,
    fs_type,
    machine,
    make_repo,
    summary_ms,
    tmpfs_dir,
    wait_until,
    workspace,
)
from autopack.protocol import GetStatus, Submit

TERMINAL = ("succeeded", "failed", "cancelled")


def read_mark(path: Path) -> float:
    return float(path.read_text().strip())


def bench_daemon(root: Path, repo: Path, runs: int) -> dict[str, Any]:
    marks = root / "marks-daemon"
    marks.mkdir()
    gaps: list[float] = []
    ends: list[float] = []
    with BenchDaemon(root, "start", max_concurrent_runs=1) as d:
        d.start()
        with d.client() as c:
            for i in range(runs + 1):  # run 0 is a warm-up (page cache, git config reads)
                mark = marks / str(i)
                spec = command_spec([[f"date +%s.%N > {mark}.tmp && mv {mark}.tmp {mark}"]],
                                    goal=f"start overhead {i}")
                t0 = time.time()
                run_id = c.request(Submit(spec=spec, repo=str(repo))).run_id
                wait_until(mark.exists, 60, 0.002, f"check of run {i} started")
                started = read_mark(mark)
                state = ""

                def ended(run_id: str = run_id) -> bool:
                    nonlocal state
                    state = c.request(GetStatus(run_id=run_id)).state
                    return state in TERMINAL

                wait_until(ended, 60, 0.01, f"run {i} ended")
                if state != "succeeded":
                    raise RuntimeError(f"run {run_id} ended {state}")
                # 'succeeded' is recorded before the worktree is removed; the slot frees after
                wait_until(lambda run_id=run_id: "report_written" in d.event_kinds(run_id), 60, 0.01,
                           f"run {i} cleaned up")
                if i:
                    gaps.append(started - t0)
                    ends.append(time.time() - t0)
        d.stop()
    return {"first_check": summary_ms(gaps), "median_ms": round(statistics.median(gaps) * 1000, 1),
            "submit_to_run_end": summary_ms(ends)}


def bench_clone(root: Path, repo: Path, runs: int, url: str) -> dict[str, Any]:
    marks = root / "marks-clone"
    marks.mkdir(exist_ok=True)
    gaps: list[float] = []
    for i in range(runs + 1):
        dest = root / "clones" / str(i)
        mark = marks / f"{i}-{url == str(repo)}"
        t0 = time.time()
        subprocess.run(["git", "clone", "-q", url, str(dest)], check=True, capture_output=True)
        subprocess.run(["sh", "-c", f"date +%s.%N > {mark}"], cwd=dest, check=True)
        started = read_mark(mark)
        shutil.rmtree(dest)
        if i:
            gaps.append(started - t0)
    return {"first_check": summary_ms(gaps), "median_ms": round(statistics.median(gaps) * 1000, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--tmpdir", default=tmpfs_dir(),
                    help="where the repo, state dir and clones live (default /dev/shm: tmpfs)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with workspace("start", args.tmpdir) as root:
        fs = fs_type(root)
        repo = make_repo(root / "repo", args.files)
        daemon = bench_daemon(root, repo, args.runs)
        local = bench_clone(root, repo, args.runs, str(repo))
        packed = bench_clone(root, repo, args.runs, f"file://{repo}")
    d_med = daemon["median_ms"]
    result = {"bench": "start_overhead", "machine": machine(), "runs": args.runs, "files": args.files,
              "filesystem": fs,
              "daemon": daemon, "clone_local": local, "clone_file_url": packed,
              "speedup_vs_local_clone": round(local["median_ms"] / d_med, 2),
              "speedup_vs_file_url_clone": round(packed["median_ms"] / d_med, 2),
              "targets": {"median_ms": 150, "speedup": 5},
              "met": {"median": d_med <= 150, "speedup": local["median_ms"] / d_med >= 5}}
    fc = daemon["first_check"]
    lines = [
        f"submit → first check started, {args.runs} runs, repository of {args.files} files "
        f"(on {fs}):",
        f"  autopackd (worktree):          median {d_med:.1f} ms  p90 {fc['p90_ms']:.1f} ms  "
        f"max {fc['max_ms']:.1f} ms   (target ≤ 150 ms)",
        f"  git clone /path + check:       median {local['median_ms']:.1f} ms  "
        f"→ autopackd is {result['speedup_vs_local_clone']:.1f}× faster   (target ≥ 5×)",
        f"  git clone file://path + check: median {packed['median_ms']:.1f} ms  "
        f"→ autopackd is {result['speedup_vs_file_url_clone']:.1f}× faster",
        f"  (whole run, submit → succeeded incl. worktree removal: median "
        f"{daemon['submit_to_run_end']['p50_ms']:.0f} ms)",
    ]
    emit(result, args.json, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

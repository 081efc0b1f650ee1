"""Benchmark: many runs at once — total time, daemon peak RSS, /healthz p99 under load.

Usage::

    .venv/bin/python bench/scale.py [--runs 200] [--concurrency 50] [--files 50] [--json]

A real ``autopackd`` with ``max_concurrent_runs = 50`` gets 200 runs (one
control connection, submitted back to back), each of two short ``command``
phases that write a file (so each phase is committed on the run branch). We
report the time from the first submit until every run ended, how many
succeeded, the daemon's RSS sampled every 50 ms (``VmRSS``) and its peak
(``VmHWM`` read from ``/proc/<pid>/status`` at the end; the daemon process
only, not its git/check children), and ``GET /healthz`` latency (new
connection each, every 20 ms) during the load.

Targets: peak RSS ≤ 250 MB.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from _common import (
    BenchDaemon,
    Sampler,
    command_spec,
    emit,
    fs_type,
    healthz_new_connection,
    machine,
    make_repo,
    summary_ms,
    tmpfs_dir,
    wait_until,
    workspace,
)
from autopack.protocol import GetHealth, Submit

TERMINAL = ("succeeded", "failed", "cancelled")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--files", type=int, default=50, help="files in the repository")
    ap.add_argument("--tmpdir", default=tmpfs_dir(),
                    help="where the repo and state dir live (default /dev/shm: tmpfs)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with workspace("scale", args.tmpdir) as root:
        fs = fs_type(root)
        repo = make_repo(root / "repo", args.files)
        spec = command_spec([["echo one > phase1.txt"], ["echo two > phase2.txt"]], goal="scale")
        with BenchDaemon(root, "scale", max_concurrent_runs=args.concurrency) as d:
            d.start()
            rss_idle_kb = d.proc_status("VmRSS")
            rss = Sampler(lambda: float(d.proc_status("VmRSS")), 0.05)
            health = Sampler(lambda: healthz_new_connection(d.health_port), 0.02)
            states: dict[str, str] = {}
            with rss, health, d.client() as c:
                t0 = time.monotonic()
                ids = [c.request(Submit(spec=spec, repo=str(repo))).run_id for _ in range(args.runs)]
                submit_s = time.monotonic() - t0

                def all_ended() -> bool:  # cheap poll: counts, not the full run list
                    counts = c.request(GetHealth()).runs
                    return sum(counts.get(s, 0) for s in TERMINAL) >= args.runs

                wait_until(all_ended, 170, 0.05, f"{args.runs} runs ended")
                total_s = time.monotonic() - t0
                states = {r.run_id: r.state for r in c.runs()}
            peak_kb = d.proc_status("VmHWM")
            end_kb = d.proc_status("VmRSS")
            d.stop()
    outcome: dict[str, int] = {}
    for i in ids:
        outcome[states[i]] = outcome.get(states[i], 0) + 1
    hz = summary_ms(health.values)
    result: dict[str, Any] = {
        "bench": "scale", "machine": machine(), "filesystem": fs, "runs": args.runs,
        "concurrency": args.concurrency, "phases_per_run": 2, "outcomes": outcome,
        "submit_all_s": round(submit_s, 3), "total_s": round(total_s, 2),
        "runs_per_s": round(args.runs / total_s, 2),
        "rss_mb": {"idle": round(rss_idle_kb / 1024, 1),
                   "sampled_max": round(max(rss.values, default=0) / 1024, 1),
                   "peak_vmhwm": round(peak_kb / 1024, 1), "end": round(end_kb / 1024, 1)},
        "healthz": hz, "healthz_errors": health.errors[:5],
        "targets": {"peak_rss_mb": 250}, "met": {"peak_rss": peak_kb / 1024 <= 250},
    }
    r = result["rss_mb"]
    lines = [
        f"{args.runs} runs × 2 command phases, max_concurrent_runs = {args.concurrency} (on {fs}):",
        f"  total {total_s:.1f} s ({result['runs_per_s']:.1f} runs/s; submitting all took {submit_s:.2f} s); "
        f"outcomes {outcome}",
        f"  daemon RSS: idle {r['idle']} MB, sampled max {r['sampled_max']} MB, "
        f"peak (VmHWM) {r['peak_vmhwm']} MB, at end {r['end']} MB   (target ≤ 250 MB)",
        f"  /healthz during the load ({hz['n']} probes, new connection each): p50 {hz['p50_ms']:.2f} ms  "
        f"p99 {hz['p99_ms']:.2f} ms  max {hz['max_ms']:.2f} ms"
        + (f"  ERRORS: {health.errors[:3]}" if health.errors else ""),
    ]
    emit(result, args.json, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

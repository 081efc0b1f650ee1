"""Benchmark: submit→ack latency, sequential submits per second, /healthz under load.

Usage::

    .venv/bin/python bench/submit.py [--submits 2000] [--active 100] [--probes 1000] [--json]

Part 1 — submit. A real ``autopackd`` with ``max_concurrent_runs = 1``; a first
run whose check sleeps holds the only slot, so the N runs submitted next stay
queued and the daemon does not execute thousands of runs while we measure.
N ``Submit`` requests go one after the other on one control connection; the
latency is the client's send→``Submitted`` time. Durability is on: the store
acknowledges only after the run's transaction is committed (WAL,
``synchronous = NORMAL`` — the store's setting: a committed run survives
``kill -9`` of the daemon; a power cut may lose the last commits).
Targets: p50 ≤ 1 ms, ≥ 1,000 submits/s.

Part 2 — health under load. A second daemon with ``max_concurrent_runs =
100`` and 100 runs whose check sleeps, all running; then ``GET /healthz``
latency on a new TCP connection per request and over one keep-alive
connection. Target: p99 ≤ 10 ms.
"""

from __future__ import annotations

import argparse
import inspect
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    BenchDaemon,
    KeepAliveProbe,
    command_spec,
    emit,
    healthz_new_connection,
    machine,
    make_repo,
    server_closes_after_connection_close,
    summary_ms,
    wait_until,
    workspace,
)
from autopack.daemon._store import Store
from autopack.protocol import GetHealth, Submit, Submitted


def bench_submit(root: Path, repo: Path, n: int) -> dict[str, Any]:
    with BenchDaemon(root, "submit", max_concurrent_runs=1) as d:
        d.start()
        hold = command_spec([["sleep 300"]], goal="holds the only slot")
        spec = command_spec([["true"]], goal="queued submit")
        latencies: list[float] = []
        with d.client() as c:
            first = c.request(Submit(spec=hold, repo=str(repo)))
            assert isinstance(first, Submitted)
            for _ in range(50):  # warm-up (not counted)
                c.request(Submit(spec=spec, repo=str(repo)))
            t_start = time.perf_counter()
            for _ in range(n):
                t0 = time.perf_counter()
                reply = c.request(Submit(spec=spec, repo=str(repo)))
                latencies.append(time.perf_counter() - t0)
                assert isinstance(reply, Submitted)
            total = time.perf_counter() - t_start
            counts = c.request(GetHealth()).runs
        d.stop()
        journal = sqlite3.connect(d.state_dir / "autopack.db").execute(
            "PRAGMA journal_mode").fetchone()[0]
    sync = inspect.signature(Store.__init__).parameters["synchronous"].default
    return {"submits": n, "latency": summary_ms(latencies), "total_s": round(total, 3),
            "submits_per_s": round(n / total, 1), "runs_in_store": counts,
            "journal_mode": journal, "synchronous": sync}


def bench_health(root: Path, repo: Path, active: int, probes: int) -> dict[str, Any]:
    with BenchDaemon(root, "health", max_concurrent_runs=active) as d:
        d.start()
        marks = root / "health-marks"
        marks.mkdir()
        spec = command_spec([[f'touch {marks}/"$(basename "$PWD")" && sleep 120']],
                            goal="keeps a slot busy")
        with d.client() as c:
            ids = [c.request(Submit(spec=spec, repo=str(repo))).run_id for _ in range(active)]

            def all_running() -> bool:
                states = d.states(c)
                return sum(states[i] == "running" for i in ids) == active

            wait_until(all_running, 120, 0.1, f"{active} runs running")
            # 'running' is recorded before the worktree exists: wait for the checks themselves
            ramp = wait_until(lambda: len(list(marks.iterdir())) >= active, 120, 0.05,
                              f"{active} checks started")
            new_conn = [healthz_new_connection(d.health_port) for _ in range(probes)]
            probe = KeepAliveProbe(d.health_port)
            try:
                keep_alive = [probe.get() for _ in range(probes)]
            finally:
                probe.close()
            closes = server_closes_after_connection_close(d.health_port)
            still = sum(v == "running" for v in d.states(c).values())
        d.stop()
    return {"active_runs": active, "ramp_s": round(ramp, 2), "running_at_end": still,
            "server_closes_on_connection_close": closes,
            "new_connection": summary_ms(new_conn), "keep_alive": summary_ms(keep_alive)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--submits", type=int, default=2000)
    ap.add_argument("--active", type=int, default=100)
    ap.add_argument("--probes", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with workspace("submit") as root:
        repo = make_repo(root / "repo", 10)
        sub = bench_submit(root, repo, args.submits)
        health = bench_health(root, repo, args.active, args.probes)
    lat, nc, ka = sub["latency"], health["new_connection"], health["keep_alive"]
    result = {"bench": "submit", "machine": machine(), "submit": sub, "health": health,
              "targets": {"submit_p50_ms": 1.0, "submits_per_s": 1000, "healthz_p99_ms": 10.0},
              "met": {"submit_p50": lat["p50_ms"] <= 1.0, "submits_per_s": sub["submits_per_s"] >= 1000,
                      "healthz_p99": max(nc["p99_ms"], ka["p99_ms"]) <= 10.0}}
    lines = [
        f"submit→ack over {sub['submits']} sequential submits on one connection "
        f"(store: WAL journal_mode={sub['journal_mode']}, synchronous={sub['synchronous']}: "
        "committed before ack, survives kill -9 of the daemon):",
        f"  p50 {lat['p50_ms']:.3f} ms  p90 {lat['p90_ms']:.3f} ms  p99 {lat['p99_ms']:.3f} ms  "
        f"max {lat['max_ms']:.3f} ms   (target p50 ≤ 1 ms)",
        f"  {sub['submits_per_s']:.0f} submits/s sequential   (target ≥ 1,000/s)",
        f"/healthz with {health['active_runs']} runs active ({health['running_at_end']} still running "
        f"at the end; ramp-up {health['ramp_s']} s):",
        f"  new connection each: p50 {nc['p50_ms']:.3f} ms  p99 {nc['p99_ms']:.3f} ms  max {nc['max_ms']:.3f} ms",
        f"  keep-alive:          p50 {ka['p50_ms']:.3f} ms  p99 {ka['p99_ms']:.3f} ms  max {ka['max_ms']:.3f} ms"
        "   (target p99 ≤ 10 ms)",
        "  server closes the connection after a 'Connection: close' request: "
        + ("yes" if health["server_closes_on_connection_close"] else "NO (kept open; bug)"),
    ]
    emit(result, args.json, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

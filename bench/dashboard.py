"""Benchmark: the dashboard's run list with 10,000 stored runs, next to ``/healthz``.

Usage::

    .venv/bin/python bench/dashboard.py [--runs 10000] [--requests 300] [--json]

A state directory is seeded with ``--runs`` ended runs (3 phases, 14 events and 2 LLM
calls each, four repositories, every seventh goal containing "needle") through the
schema's own migrations, then a real ``autopackd`` serves it. Over one keep-alive
HTTP/1.1 connection each, interleaved request by request, we time (client side,
send → last byte):

* ``GET /healthz`` — the floor: the same listener, no query;
* ``GET /`` — the newest page of the run list (50 rows, all figures);
* ``GET /?before=<middle>`` — a page deep in the history (keyset paging);
* ``GET /?state=failed&repo=…`` — filtered;
* ``GET /?q=needle`` — text search (a scan of the goals: the slowest kind);
* ``GET /runs/<id>`` — a detail page.

Target: the list page served in under 50 ms at 10,000 runs (p50 and p99 printed, and
the ratio to ``/healthz`` measured in the same run).
"""

from __future__ import annotations

import argparse
import http.client
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from _common import BenchDaemon, emit, fs_type, machine, summary_ms, tmpfs_dir, workspace
from autopack.daemon._schema import migrate

REPOS = [f"/srv/repos/service-{i}" for i in range(4)]
STATES = ("succeeded", "succeeded", "succeeded", "failed", "cancelled")


def seed(db: Path, n: int) -> None:
    """``n`` ended runs with phases, events and LLM calls, written in a few transactions."""
    conn = sqlite3.connect(db, isolation_level=None)
    migrate(conn)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("BEGIN")
    t0 = time.time() - n * 60
    runs, phases, events, calls = [], [], [], []
    for i in range(n):
        rid = f"20260101-{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}-{i:08x}"
        ts = t0 + i * 60
        state = STATES[i % len(STATES)]
        goal = f"Make change number {i} to the service" + (" (needle)" if i % 7 == 0 else "")
        spec = json.dumps({"goal": goal, "phases": [{"id": f"p{k}", "goal": "g"} for k in range(3)]})
        runs.append((rid, i + 1, state, None if state == "succeeded" else "a reason", goal,
                     REPOS[i % 4], "HEAD", "0" * 40, f"autopack/{rid}", spec, "hardened", ts,
                     ts + 1, ts + 50))
        for k in range(3):
            phases.append((rid, k, f"p{k}", "build", "succeeded" if state == "succeeded" or k == 0
                           else "cancelled", 1 + (k == 1), 0, None, None, ts + k * 10,
                           ts + k * 10 + 9))
        kinds = ["submitted", "run_running"] + [
            k for p in range(3) for k in ("phase_running", "attempt_started", "check_finished",
                                          "phase_succeeded")][:11] + [f"run_{state}"]
        kinds[5] = "doctor_avoided"
        for j, kind in enumerate(kinds):
            payload = {"tokens_avoided": 11000, "pattern": "test_failure"} if j == 5 else {}
            events.append((rid, "p0" if 2 <= j < 13 else None, 1, kind, ts + j,
                           json.dumps(payload)))
        for role in ("builder", "builder"):
            calls.append((rid, "p0", 1, role, "claude-sonnet-4-6", 3000, 400, 1200, 2000, ts + 3,
                          19_100_000_000))
    conn.executemany("INSERT INTO runs(id, seq, state, reason, goal, repo, base, base_commit,"
                     " branch, spec, arm, created_at, started_at, ended_at)"
                     " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", runs)
    conn.executemany("INSERT INTO phases(run_id, idx, id, kind, state, attempts, doctor_calls,"
                     " reason, commit_sha, started_at, ended_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                     phases)
    conn.executemany("INSERT INTO events(run_id, phase_id, attempt, kind, ts, payload)"
                     " VALUES (?,?,?,?,?,?)", events)
    conn.executemany("INSERT INTO llm_calls(run_id, phase_id, attempt, role, model, input_tokens,"
                     " output_tokens, cache_creation, cache_read, ts, cost_pusd)"
                     " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                     calls)
    conn.execute("COMMIT")
    conn.close()


class Probe:
    """``GET path`` over one persistent connection; returns seconds (and checks the status)."""

    def __init__(self, port: int, path: str) -> None:
        self.port, self.path = port, path
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.times: list[float] = []
        self.size = 0

    def get(self) -> None:
        try:
            t0 = time.perf_counter()
            self.conn.request("GET", self.path)
            resp = self.conn.getresponse()
        except (http.client.HTTPException, OSError):
            # the listener ends a connection 30 s after it opened: reconnect, time again
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            t0 = time.perf_counter()
            self.conn.request("GET", self.path)
            resp = self.conn.getresponse()
        body = resp.read()
        self.times.append(time.perf_counter() - t0)
        if resp.status != 200:
            raise RuntimeError(f"{self.path} answered {resp.status}: {body[:200]!r}")
        self.size = len(body)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with workspace("dashboard", tmpfs_dir()) as root:
        state = root / "state"
        state.mkdir()
        t0 = time.perf_counter()
        seed(state / "autopack.db", args.runs)
        seeded_s = time.perf_counter() - t0
        with BenchDaemon(root, max_concurrent_runs=1) as d:
            d.start()
            middle = args.runs // 2
            probes = {
                "/healthz (floor)": Probe(d.health_port, "/healthz"),
                "list, newest page": Probe(d.health_port, "/"),
                "list, deep page": Probe(d.health_port, f"/?before={middle}"),
                "list, filtered": Probe(d.health_port, f"/?state=failed&repo={REPOS[1]}"),
                "list, text search": Probe(d.health_port, "/?q=needle"),
                "run detail": Probe(d.health_port, "/runs/20260101-000000-00000000"),
            }
            for p in probes.values():  # warm up: first queries, page cache
                for _ in range(5):
                    p.get()
                p.times.clear()
            for _ in range(args.requests):  # interleaved: the same machine state for each
                for p in probes.values():
                    p.get()
    floor = summary_ms(probes["/healthz (floor)"].times)
    result: dict[str, Any] = {"machine": machine(), "runs": args.runs,
                              "requests": args.requests, "seed_s": round(seeded_s, 2),
                              "disk": fs_type(root), "pages": {}}
    lines = [f"dashboard with {args.runs:,} stored runs ({args.requests} requests each, "
             f"interleaved, keep-alive; state dir on {result['disk']})",
             f"{'what':<22}{'p50 ms':>9}{'p99 ms':>9}{'x healthz p50':>15}{'bytes':>9}"]
    for name, p in probes.items():
        s = summary_ms(p.times)
        ratio = s["p50_ms"] / floor["p50_ms"] if floor["p50_ms"] else 0.0
        result["pages"][name] = {**s, "bytes": p.size, "ratio_to_healthz_p50": round(ratio, 1)}
        lines.append(f"{name:<22}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}{ratio:>15.1f}{p.size:>9}")
    newest = result["pages"]["list, newest page"]
    verdict = "meets" if newest["p99_ms"] < 50 else "MISSES"
    lines.append(f"target: list page < 50 ms — p99 {newest['p99_ms']:.2f} ms, {verdict} it")
    emit(result, args.json, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: how the daemon's figures grow with its history (1k, 10k, 100k stored runs).

Usage::

    .venv/bin/python bench/growth.py [--sizes 1000,10000,100000] [--reps 2] [--json]

For each size, a database of that many *ended* runs is built **by direct SQL
inserts into a real database file** (the daemon's own schema, migrated by its
own code; per run: one phase, three events, one LLM call; states spread over
succeeded / failed / cancelled), which the daemon then opens — building 100k
runs through the socket would take minutes and measure the build, not the
daemon. Then, on a real ``autopackd`` over that file:

* **start-to-serving**: spawn → first ``GetHealth`` answered on the socket;
* **submit p50**: 300 sequential submits on one connection (the runs queue
  behind a run that holds the only slot);
* **health p99**: 500 ``GetHealth`` over the socket;
* **list p50**: 200 ``ListRuns(limit=100)`` (the first page, newest first);
* **RSS**: the daemon's ``VmRSS`` after all that;
* **store side**: p99 of the queries behind health (runs by state) and
  ``/metrics`` run in this process on the same file, in µs — the part that
  must not grow with history, without the socket, the event loop, or the
  scheduling delays of a shared 2-core machine (which dominate the p99s above);
* **/healthz** p50/p99: the peer of the other HTTP figures — answered by the event
  loop alone, no store: the floor of HTTP + loop on this machine at that moment.
  ``/healthz``, ``/readyz`` and ``/metrics`` are asked in 3 interleaved rounds of 100
  (one keep-alive connection each; medians of the rounds' p50/p99);
* **CPU µs per request**: the time the daemon's threads ran (``/proc/<pid>/task/*/schedstat``)
  over each round, per request — what an answer costs the daemon, which the
  scheduling delays of a shared machine do not inflate the way they do wall-clock p99s.

Sizes run one after the other in each repetition (interleaved), the smallest
is the peer of the others; figures are min / median / max over repetitions.
Targets (issue 16): health, ``/readyz``, ``/metrics`` p99 ≤ 1 ms at 100k runs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    BenchDaemon,
    command_spec,
    disk_of,
    emit,
    machine,
    make_repo,
    percentile,
    spread,
    workspace,
)
from autopack.daemon._client import DaemonUnavailable
from autopack.daemon._schema import migrate
from autopack.protocol import GetHealth, ListRuns, Submit

ENDED = ("succeeded", "failed", "cancelled")


def build_history(db: Path, n: int, repo: Path, seed: int = 16) -> float:
    """``n`` ended runs written straight into ``db`` (schema from the daemon's migrations).
    Returns the seconds it took."""
    t0 = time.perf_counter()
    rng = random.Random(seed)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    migrate(conn)
    spec = json.dumps({"goal": "history", "phases": [{"id": "p", "goal": "g", "kind": "command",
                                                      "checks": ["true"]}]})
    now = time.time() - n
    runs, phases, events, calls = [], [], [], []
    for i in range(n):
        run_id = f"20260101-000000-{i:08x}"
        state = rng.choice(ENDED)
        ts = now + i
        runs.append((run_id, i + 1, state, None, "history", str(repo), "HEAD", None,
                     f"autopack/{run_id}", spec, "hardened", ts, ts, ts + 0.5, None, None))
        phases.append((run_id, 0, "p", "command", state, 1, 0, None, None, ts, ts + 0.5))
        events += [(run_id, None, None, "submitted", ts, "{}"),
                   (run_id, "p", 1, "attempt_started", ts, "{}"),
                   (run_id, None, None, "run_" + state, ts + 0.5, "{}")]
        calls.append((run_id, "p", 1, "builder", "claude", 100, 50, 0, 0, ts))
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO runs(id, seq, state, reason, goal, repo, base, base_commit, branch,"
                     " spec, arm, created_at, started_at, ended_at, final_commit, report_path)"
                     " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", runs)
    conn.executemany("INSERT INTO phases(run_id, idx, id, kind, state, attempts, doctor_calls,"
                     " reason, commit_sha, started_at, ended_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                     phases)
    conn.executemany("INSERT INTO events(run_id, phase_id, attempt, kind, ts, payload)"
                     " VALUES (?,?,?,?,?,?)", events)
    conn.executemany("INSERT INTO llm_calls(run_id, phase_id, attempt, role, model, input_tokens,"
                     " output_tokens, cache_creation, cache_read, ts) VALUES (?,?,?,?,?,?,?,?,?,?)",
                     calls)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - t0


def store_side_us(db: Path, reps: int = 2000) -> dict[str, float]:
    """What health and /metrics cost the store itself, in-process on the same file (µs, p99):
    free of the socket, the event loop and the machine's scheduling noise."""
    from autopack.daemon import _queries as q
    from autopack.daemon._stats import MetricsCache, metrics_snapshot

    conn = sqlite3.connect(db, isolation_level=None)
    conn.row_factory = sqlite3.Row
    cache = MetricsCache()
    metrics_snapshot(conn, queue_depth=0, memory_degraded=False, actor_restarts={},
                     control_connections_total=0, control_connections_active=0, cache=cache)
    out = {}
    for name, fn in (("counts", lambda: q.count_by_state(conn)),
                     ("metrics", lambda: metrics_snapshot(
                         conn, queue_depth=0, memory_degraded=False, actor_restarts={},
                         control_connections_total=0, control_connections_active=0, cache=cache))):
        lat = []
        for _ in range(reps):
            t0 = time.perf_counter()
            conn.execute("BEGIN")
            fn()
            conn.execute("COMMIT")
            lat.append(time.perf_counter() - t0)
        out[name] = percentile(lat, 99) * 1e6
    conn.close()
    return out


def _cpu_s(pid: int) -> float:
    """CPU seconds that process ``pid``'s threads have run so far (``schedstat``, ns)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            pass  # a thread that just ended
    return total / 1e9


def _http(port: int, path: str, n: int, pid: int) -> dict[str, float]:
    """p50/p99 (ms) of ``n`` GETs on one keep-alive connection, and the daemon's CPU time per
    request (µs): what the answer costs the daemon, whatever else the machine is doing."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    lat = []
    try:
        for i in range(n + 20):
            if i == 20:
                cpu0 = _cpu_s(pid)
            t0 = time.perf_counter()
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            lat.append(time.perf_counter() - t0)
            if resp.status not in (200, 503):
                raise RuntimeError(f"{path} answered {resp.status}")
        cpu = _cpu_s(pid) - cpu0
    finally:
        conn.close()
    return {"p50": percentile(lat[20:], 50) * 1000, "p99": percentile(lat[20:], 99) * 1000,
            "cpu_us": cpu / n * 1e6}


def measure(root: Path, repo: Path, n: int, rep: int) -> dict[str, float]:
    name = f"g{n}-{rep}"
    d = BenchDaemon(root, name, max_concurrent_runs=1)
    d.state_dir.mkdir(parents=True)
    build_s = build_history(d.state_dir / "autopack.db", n, repo)
    with d:
        t0 = time.perf_counter()
        d.spawn()
        while True:
            try:
                with d.client(timeout=10) as c:
                    c.request(GetHealth())
                break
            except DaemonUnavailable:
                time.sleep(0.002)
        serving_ms = (time.perf_counter() - t0) * 1000
        d.wait_serving()
        spec = command_spec([["true"]], goal="growth submit")
        with d.client() as c:
            c.request(Submit(spec=command_spec([["sleep 600"]], goal="holds the slot"), repo=str(repo)))
            for _ in range(20):
                c.request(Submit(spec=spec, repo=str(repo)))
            sub = []
            for _ in range(300):
                t1 = time.perf_counter()
                c.request(Submit(spec=spec, repo=str(repo)))
                sub.append(time.perf_counter() - t1)
            health = []
            for _ in range(520):
                t1 = time.perf_counter()
                h = c.request(GetHealth())
                health.append(time.perf_counter() - t1)
            stored = sum(h.runs.values())
            lst = []
            for _ in range(200):
                t1 = time.perf_counter()
                page = c.request(ListRuns(limit=100))
                lst.append(time.perf_counter() - t1)
            assert len(page.runs) == 100
        # interleaved rounds: /healthz (answered by the loop alone, no store) is the peer
        http = {k: [] for k in ("healthz", "readyz", "metrics")}
        for _ in range(3):
            for k in http:
                http[k].append(_http(d.health_port, "/" + k, 100, d.pid))
        hz, rz, mz = ({f: percentile([r[f] for r in http[k]], 50) for f in ("p50", "p99", "cpu_us")}
                      for k in ("healthz", "readyz", "metrics"))
        rss_mb = d.proc_status("VmRSS") / 1024
        d.stop()
    store = store_side_us(d.state_dir / "autopack.db")
    return {"stored_runs": stored, "build_s": build_s, "start_to_serving_ms": serving_ms,
            "store_counts_p99_us": store["counts"], "store_metrics_p99_us": store["metrics"],
            "submit_p50_ms": percentile(sub, 50) * 1000,
            "health_p99_ms": percentile(health[20:], 99) * 1000,
            "healthz_p99_ms": hz["p99"], "readyz_p99_ms": rz["p99"], "metrics_p99_ms": mz["p99"],
            "healthz_p50_ms": hz["p50"], "readyz_p50_ms": rz["p50"], "metrics_p50_ms": mz["p50"],
            "healthz_cpu_us": hz["cpu_us"], "readyz_cpu_us": rz["cpu_us"],
            "metrics_cpu_us": mz["cpu_us"],
            "list_p50_ms": percentile(lst, 50) * 1000, "rss_mb": rss_mb}


COLUMNS = [("submit_p50_ms", "submit p50 ms"), ("health_p99_ms", "GetHealth p99 ms"),
           ("healthz_p50_ms", "/healthz p50 ms (peer)"), ("readyz_p50_ms", "/readyz p50 ms"),
           ("metrics_p50_ms", "/metrics p50 ms"),
           ("healthz_p99_ms", "/healthz p99 ms (peer)"), ("readyz_p99_ms", "/readyz p99 ms"),
           ("metrics_p99_ms", "/metrics p99 ms"),
           ("healthz_cpu_us", "/healthz CPU µs/req (peer)"), ("readyz_cpu_us", "/readyz CPU µs/req"),
           ("metrics_cpu_us", "/metrics CPU µs/req"),
           ("list_p50_ms", "list p50 ms"), ("rss_mb", "RSS MB"),
           ("start_to_serving_ms", "start→serving ms"),
           ("store_counts_p99_us", "store: counts p99 µs"),
           ("store_metrics_p99_us", "store: metrics p99 µs")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--tmpdir", default=tempfile.gettempdir())
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    table: dict[int, list[dict[str, float]]] = {n: [] for n in sizes}
    with workspace("growth", args.tmpdir) as root:
        disk = disk_of(root)
        repo = make_repo(root / "repo", 10)
        for rep in range(args.reps):
            for n in sizes:
                table[n].append(measure(root, repo, n, rep))
    agg = {n: {k: spread([r[k] for r in rows]) for k in rows[0]} for n, rows in table.items()}
    big = agg[max(sizes)]
    result = {"bench": "growth", "machine": machine(), "disk": disk, "reps": args.reps,
              "sizes": sizes, "rows": {str(n): v for n, v in table.items()},
              "over_reps": {str(n): v for n, v in agg.items()},
              "targets": {"p99_ms_at_largest": 1.0},
              "met": {k: big[k]["max"] <= 1.0
                      for k in ("health_p99_ms", "readyz_p99_ms", "metrics_p99_ms")}}
    lines = [f"disk: {disk['df_T'] or disk['type']}",
             f"history built by direct SQL inserts into the daemon's database file; "
             f"{args.reps} repetitions, median (min-max)",
             f"{'stored runs':>28} " + " ".join(f"{n:>22,}" for n in sizes)]
    for k, label in COLUMNS:
        cells = [f"{agg[n][k]['median']:.2f} ({agg[n][k]['min']:.2f}-{agg[n][k]['max']:.2f})"
                 for n in sizes]
        lines.append(f"{label:>28} " + " ".join(f"{c:>22}" for c in cells))
    lines.append("target: health, /readyz, /metrics p99 ≤ 1 ms at the largest size: "
                 + ", ".join(f"{k.split('_')[0]} {'met' if v else 'NOT met'}"
                             for k, v in result["met"].items()))
    emit(result, args.json, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

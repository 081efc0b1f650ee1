"""Benchmark: durable submit against Huey's in-process ``SqliteHuey`` enqueue, in one
process run, interleaved, over repetitions; then submit latency while runs execute.

Usage::

    .venv/bin/python bench/submit.py [--submits 2000] [--reps 3] [--clients 8]
                                     [--load-runs 50] [--baseline CHECKOUT] [--json]

(``pip install -e '.[bench]'`` installs the peer, ``huey``.)

Part 1 — submit vs Huey. Each repetition, on the same disk (the system temp
dir; the bench prints ``df -T`` of it), one after the other:

* **autopack, sequential**: a real ``autopackd`` (``max_concurrent_runs = 1``,
  the default ``store_synchronous = normal``,
  its slot held by a sleeping run so the submitted runs stay queued); N
  ``Submit`` requests one after the other on one control connection; latency =
  the client's send → ``Submitted``. Each is acknowledged only after its run is
  committed (group commit: a run survives ``kill -9`` once acknowledged).
* **Huey, sequential**: ``SqliteHuey`` (WAL; ``synchronous = FULL``, its default)
  in this process, N ``task()`` enqueues; latency = the call.
* **autopack, sequential, ``store_synchronous = full``**: the same with an
  fsync per commit, as Huey does per enqueue (like for like; no target).
* **autopack, K connections**: K client *processes* (default 8), each its own
  connection, N submits in all; rate = N / (last ack − first send).

Targets (issue 16): sequential p50 ≤ 2× Huey's; K connections ≥ 1× Huey's
single-process rate. Figures are min / median / max over repetitions.

Part 2 — submit under load. A daemon with ``max_concurrent_runs = 50``: 50 runs
execute (each of 3 command phases of ``sleep 1``, so they keep writing
events), and while they do, submits are timed one after the other on one
connection (those runs queue). The same number of submits to a daemon with no
run executing, just before, on the same disk, is the peer. Target: p50 ≤ 1 ms under load.

``--baseline CHECKOUT`` (a checkout of an earlier revision: ``git worktree add
/tmp/base REV``) adds, in each repetition of part 1, the sequential (normal) and
K-connection submits against that tree's daemon, same interpreter and disk: a
before/after of a change in one run (``this/baseline`` ratios; < 1 p50 = faster).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    BenchDaemon,
    code_tree,
    command_spec,
    disk_of,
    emit,
    machine,
    make_repo,
    percentile,
    spread,
    summary_ms,
    wait_until,
    workspace,
)
from autopack.daemon._client import Client
from autopack.protocol import GetHealth, Submit, Submitted


def _submit_many(c: Client, spec: Any, repo: Path, n: int) -> list[float]:
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        reply = c.request(Submit(spec=spec, repo=str(repo)))
        lat.append(time.perf_counter() - t0)
        assert isinstance(reply, Submitted)
    return lat


def autopack_sequential(d: BenchDaemon, repo: Path, n: int) -> dict[str, float]:
    spec = command_spec([["true"]], goal="queued submit")
    with d.client() as c:
        _submit_many(c, spec, repo, 50)  # warm-up
        t0 = time.perf_counter()
        lat = _submit_many(c, spec, repo, n)
        total = time.perf_counter() - t0
    return {"p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000,
            "per_s": n / total}


def huey_sequential(db: Path, n: int) -> dict[str, float]:
    from huey import SqliteHuey

    huey = SqliteHuey(filename=str(db))

    @huey.task()
    def work(i: int) -> int:
        return i

    for i in range(50):  # warm-up
        work(i)
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        t1 = time.perf_counter()
        work(i)
        lat.append(time.perf_counter() - t1)
    total = time.perf_counter() - t0
    sync = huey.storage.conn.execute("PRAGMA synchronous").fetchone()[0]
    journal = huey.storage.conn.execute("PRAGMA journal_mode").fetchone()[0]
    huey.storage.close()
    return {"p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000,
            "per_s": n / total, "synchronous": sync, "journal_mode": journal}


def _client_proc(sock: str, repo: str, n: int, go: Any, out: Any) -> None:
    spec = command_spec([["true"]], goal="concurrent submit")
    with Client(sock, timeout=120) as c:
        c.request(GetHealth())
        go.wait()
        t0 = time.perf_counter()
        for _ in range(n):
            c.request(Submit(spec=spec, repo=repo))
        out.put((t0, time.perf_counter()))


def autopack_concurrent(d: BenchDaemon, repo: Path, n: int, clients: int) -> dict[str, float]:
    ctx = multiprocessing.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    per = n // clients
    procs = [ctx.Process(target=_client_proc, args=(d.socket, str(repo), per, go, out))
             for _ in range(clients)]
    for p in procs:
        p.start()
    time.sleep(0.3)  # every client connected and waiting
    go.set()
    spans = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(30)
    total = max(e for _, e in spans) - min(s for s, _ in spans)
    return {"per_s": per * clients / total}


def part1(root: Path, repo: Path, n: int, reps: int, clients: int,
          baseline: Path | None = None) -> dict[str, Any]:
    rows = []
    for rep in range(reps):
        row: dict[str, Any] = {}
        for sync in ("normal", "full", *(["baseline"] if baseline else [])):
            code = baseline if sync == "baseline" else None
            with BenchDaemon(root, f"submit{rep}{sync}", max_concurrent_runs=1, code=code,
                             store_synchronous="full" if sync == "full" else "normal") as d:
                d.start()
                with d.client() as c:
                    c.request(Submit(spec=command_spec([["sleep 600"]], goal="holds the slot"),
                                     repo=str(repo)))
                row[f"autopack_seq_{sync}"] = autopack_sequential(d, repo, n)
                if sync == "normal":
                    row["huey_seq"] = huey_sequential(root / f"huey{rep}.db", n)
                    row["autopack_conc"] = autopack_concurrent(d, repo, n, clients)
                if sync == "baseline":
                    row["baseline_conc"] = autopack_concurrent(d, repo, n, clients)
                d.stop()
        huey = row["huey_seq"]
        row["p50_ratio"] = row["autopack_seq_normal"]["p50_ms"] / huey["p50_ms"]
        row["p50_ratio_full"] = row["autopack_seq_full"]["p50_ms"] / huey["p50_ms"]
        row["conc_rate_ratio"] = row["autopack_conc"]["per_s"] / huey["per_s"]
        if baseline:
            row["vs_baseline_p50"] = (row["autopack_seq_normal"]["p50_ms"]
                                      / row["autopack_seq_baseline"]["p50_ms"])
            row["vs_baseline_conc"] = row["autopack_conc"]["per_s"] / row["baseline_conc"]["per_s"]
        rows.append(row)

    def over(*path: str) -> dict[str, float]:
        values = []
        for r in rows:
            v: Any = r
            for key in path:
                v = v[key]
            values.append(v)
        return spread(values)

    extra = {}
    if baseline:
        extra = {"baseline": str(baseline),
                 "baseline_seq_p50_ms": over("autopack_seq_baseline", "p50_ms"),
                 "baseline_conc_per_s": over("baseline_conc", "per_s"),
                 "vs_baseline_p50": over("vs_baseline_p50"),
                 "vs_baseline_conc": over("vs_baseline_conc")}
    return {
        **extra,
        "repetitions": rows,
        "autopack_seq_p50_ms": over("autopack_seq_normal", "p50_ms"),
        "autopack_seq_p99_ms": over("autopack_seq_normal", "p99_ms"),
        "autopack_seq_per_s": over("autopack_seq_normal", "per_s"),
        "autopack_full_p50_ms": over("autopack_seq_full", "p50_ms"),
        "huey_seq_p50_ms": over("huey_seq", "p50_ms"),
        "huey_seq_per_s": over("huey_seq", "per_s"),
        "autopack_conc_per_s": over("autopack_conc", "per_s"),
        "p50_ratio": over("p50_ratio"),
        "p50_ratio_full": over("p50_ratio_full"),
        "conc_rate_ratio": over("conc_rate_ratio"),
        "huey_pragmas": {k: rows[0]["huey_seq"][k] for k in ("synchronous", "journal_mode")},
    }


def part2(root: Path, repo: Path, load_runs: int, n: int) -> dict[str, Any]:
    quick = command_spec([["true"]], goal="submitted under load")
    busy = command_spec([["sleep 1"], ["sleep 1"], ["sleep 1"]], goal="keeps running")
    with BenchDaemon(root, "idle", max_concurrent_runs=1) as d:  # peer: no run executing
        d.start()
        with d.client() as c:
            c.request(Submit(spec=command_spec([["sleep 600"]], goal="holds the slot"),
                             repo=str(repo)))
            idle = _submit_many(c, quick, repo, n)
        d.stop()
    with BenchDaemon(root, "load", max_concurrent_runs=load_runs) as d:
        d.start()
        with d.client() as c:
            for _ in range(load_runs * 4):
                c.request(Submit(spec=busy, repo=str(repo)))
            try:  # a loaded machine may never show all of them running at one instant
                wait_until(lambda: c.request(GetHealth()).runs.get("running", 0) >= load_runs,
                           60, 0.01, f"{load_runs} runs running")
            except TimeoutError:
                pass
            loaded = []
            running_seen = []
            for _ in range(n):
                t0 = time.perf_counter()
                c.request(Submit(spec=quick, repo=str(repo)))
                loaded.append(time.perf_counter() - t0)
                if len(loaded) % 20 == 0:
                    running_seen.append(c.request(GetHealth()).runs.get("running", 0))
        d.stop()
    return {"idle": summary_ms(idle), "loaded": summary_ms(loaded),
            "running_during": {"min": min(running_seen), "max": max(running_seen)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--submits", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--load-runs", type=int, default=50)
    ap.add_argument("--load-submits", type=int, default=300)
    ap.add_argument("--tmpdir", default=tempfile.gettempdir())
    ap.add_argument("--baseline", type=Path, default=None,
                    help="a checkout of an earlier revision to compare with, same run")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with workspace("submit", args.tmpdir) as root:
        disk = disk_of(root)
        repo = make_repo(root / "repo", 10)
        base = code_tree(args.baseline, root) if args.baseline else None
        p1 = part1(root, repo, args.submits, args.reps, args.clients, base)
        p2 = part2(root, repo, args.load_runs, args.load_submits)
    result = {"bench": "submit", "machine": machine(), "disk": disk, "submits": args.submits,
              "reps": args.reps, "clients": args.clients, "vs_huey": p1, "under_load": p2,
              "targets": {"seq_p50_ratio_max": 2.0, "conc_rate_ratio_min": 1.0,
                          "loaded_p50_ms": 1.0},
              "met": {"seq_p50": p1["p50_ratio"]["max"] <= 2.0,
                      "conc_rate": p1["conc_rate_ratio"]["min"] >= 1.0,
                      "loaded_p50": p2["loaded"]["p50_ms"] <= 1.0}}

    def mmm(s: dict[str, float], fmt: str = "{:.3f}") -> str:
        return " / ".join(fmt.format(s[k]) for k in ("min", "median", "max"))

    lines = [
        f"disk: {disk['df_T'] or disk['type']}   (pid {os.getpid()}, {args.reps} repetitions, "
        f"min / median / max)",
        f"submit, {args.submits} sequential on one connection (acknowledged after commit):",
        f"  autopack p50 ms     {mmm(p1['autopack_seq_p50_ms'])}   p99 {mmm(p1['autopack_seq_p99_ms'])}"
        "   (store_synchronous = normal, the default: survives kill -9)",
        f"  autopack p50 ms     {mmm(p1['autopack_full_p50_ms'])}   (store_synchronous = full: "
        f"an fsync per commit like Huey; ratio {mmm(p1['p50_ratio_full'], '{:.2f}')})",
        f"  Huey enqueue p50 ms {mmm(p1['huey_seq_p50_ms'])}   (in-process SqliteHuey, journal "
        f"{p1['huey_pragmas']['journal_mode']}, synchronous={p1['huey_pragmas']['synchronous']})",
        f"  ratio autopack/Huey {mmm(p1['p50_ratio'], '{:.2f}')}   (target ≤ 2)",
        f"  rate /s: autopack {mmm(p1['autopack_seq_per_s'], '{:.0f}')}, "
        f"Huey {mmm(p1['huey_seq_per_s'], '{:.0f}')}",
        f"submit, {args.clients} connections (client processes): "
        f"{mmm(p1['autopack_conc_per_s'], '{:.0f}')} /s = "
        f"{mmm(p1['conc_rate_ratio'], '{:.2f}')}× Huey's single-process rate (target ≥ 1)",
        f"submit while {args.load_runs} runs execute ({p2['running_during']['min']}-"
        f"{p2['running_during']['max']} running): p50 {p2['loaded']['p50_ms']:.3f} ms  "
        f"p99 {p2['loaded']['p99_ms']:.3f} ms   (target p50 ≤ 1 ms); no run executing: "
        f"p50 {p2['idle']['p50_ms']:.3f} ms",
    ]
    if args.baseline:
        lines += [
            f"baseline {args.baseline}: sequential p50 ms {mmm(p1['baseline_seq_p50_ms'])}, "
            f"{args.clients} connections {mmm(p1['baseline_conc_per_s'], '{:.0f}')} /s",
            f"  this tree / baseline: p50 {mmm(p1['vs_baseline_p50'], '{:.2f}')} (< 1 = faster), "
            f"connections rate {mmm(p1['vs_baseline_conc'], '{:.2f}')} (> 1 = faster)",
        ]
    emit(result, args.json, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

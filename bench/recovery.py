"""Benchmark: crash recovery — 100 runs in flight, ``kill -9``, restart.

Usage::

    .venv/bin/python bench/recovery.py [--runs 100] [--sleep 1] [--json]

A real ``autopackd`` (``max_concurrent_runs = 100``) gets 100 runs of two
``command`` phases: ``p1`` stamps a file ``<marks>/<run-id>.<n>`` (outside the
worktree; the run id is the worktree's name), waits on a file lock this script
holds until the kill (so every run is surely mid-check when killed), sleeps
``--sleep`` seconds, then writes a file; ``p2`` writes another file. When every ``p1`` check is in flight, the daemon
is killed with SIGKILL and started again on the same state dir. Reported:

* restart → every interrupted run is ``running`` again (state ``running`` with
  reason "resumed after restart", read over the control socket; the daemon
  reconciles before it serves, so no stale pre-crash state can be read) —
  target ≤ 2 s;
* restart → every run's ``p1`` check process has started again (second stamp);
* restart → the control socket answers;
* proof that none was lost: all 100 run ids listed; each run ``succeeded`` with
  both phases ``succeeded``, ``p1`` with 2 attempts (the one killed and the
  retry), and on branch ``autopack/<id>`` exactly one commit per phase (by the
  ``Autopack-Phase`` trailer).

The state dir is on the system temp dir (disk), as the store's durability is
part of what is measured.
"""

from __future__ import annotations

import argparse
import fcntl
import os
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
    wait_until,
    workspace,
)
from autopack.protocol import GetHealth, Submit

TERMINAL = ("succeeded", "failed", "cancelled")


def stamps(marks: Path) -> dict[str, int]:
    """run id -> number of times its p1 check started."""
    out: dict[str, int] = {}
    for f in marks.iterdir():
        run_id = f.name.split(".", 1)[0]
        out[run_id] = out.get(run_id, 0) + 1
    return out


def branch_phase_commits(repo: Path, run_id: str) -> list[str]:
    """The ``Autopack-Phase`` trailers of the commits on the run branch after the initial one."""
    out = subprocess.run(["git", "log", "--format=%(trailers:key=Autopack-Phase,valueonly)",
                          f"main..autopack/{run_id}"], cwd=repo, capture_output=True, text=True,
                         check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--sleep", type=float, default=1.0,
                    help="seconds the p1 check sleeps once the gate is open")
    ap.add_argument("--tmpdir", default=None, help="where the repo and state dir live (default: system temp)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    n = args.runs
    with workspace("recovery", args.tmpdir) as root:
        fs = fs_type(root)
        repo = make_repo(root / "repo", 20)
        marks = root / "marks"
        marks.mkdir()
        gate = root / "gate.lock"  # held by us until the kill: every first p1 attempt waits on it
        gate_fd = os.open(gate, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(gate_fd, fcntl.LOCK_EX)
        p1 = (f'run="$(basename "$PWD")"; date +%s.%N > "{marks}/$run.$$"; '
              f"flock -s {gate} true; sleep {args.sleep}; echo one > phase1.txt")
        spec = command_spec([[p1], ["echo two > phase2.txt"]], goal="recovery")
        d = BenchDaemon(root, "rec", max_concurrent_runs=n)
        with d:
            d.start()
            with d.client() as c:
                ids = [c.request(Submit(spec=spec, repo=str(repo))).run_id for _ in range(n)]
            ramp = wait_until(lambda: len(stamps(marks)) >= n, 120, 0.05, f"{n} p1 checks started")
            before = stamps(marks)
            d.kill9()
            os.close(gate_fd)  # from now on p1 checks pass the gate and sleep --sleep seconds
            d.spawn()
            restart = time.monotonic()
            d.wait_serving(timeout=60, poll_s=0.002)
            serving_s = time.monotonic() - restart
            with d.client() as c:
                states: dict[str, Any] = {}

                def all_resumed() -> bool:
                    nonlocal states
                    states = {r.run_id: r for r in c.runs()}
                    return all(i in states and (states[i].state in TERMINAL or (
                        states[i].state == "running" and states[i].reason == "resumed after restart"))
                        for i in ids)

                running_s = wait_until(all_resumed, 60, 0.005, "every run running again") + serving_s
                listed = sum(i in states for i in ids)
                wait_until(lambda: sum(v >= 2 for v in stamps(marks).values()) >= n, 120, 0.01,
                           "every p1 check restarted")
                checks_s = time.monotonic() - restart

                def all_ended() -> bool:
                    counts = c.request(GetHealth()).runs
                    return sum(counts.get(s, 0) for s in TERMINAL) >= n

                wait_until(all_ended, 150, 0.1, f"{n} runs ended")
                end_s = time.monotonic() - restart
                final = {r.run_id: r for r in c.runs()}
            d.stop()
        problems: list[str] = []
        for i in ids:
            r = final.get(i)
            if r is None:
                problems.append(f"{i}: missing")
                continue
            if r.state != "succeeded":
                problems.append(f"{i}: {r.state} ({r.reason})")
            ph = {p.id: p for p in r.phases}
            if [ph[k].state for k in ("p1", "p2")] != ["succeeded", "succeeded"]:
                problems.append(f"{i}: phases {[(p.id, p.state) for p in r.phases]}")
            if ph["p1"].attempts != 2:
                problems.append(f"{i}: p1 attempts {ph['p1'].attempts} (expected 2)")
            trailers = sorted(branch_phase_commits(repo, i))
            if trailers != [f"{i}/p1", f"{i}/p2"]:
                problems.append(f"{i}: phase commits on autopack/{i}: {trailers}")
    result = {
        "bench": "recovery", "machine": machine(), "filesystem": fs, "runs": n, "p1_sleep_s": args.sleep,
        "ramp_s": round(ramp, 2), "in_flight_at_kill": len(before),
        "restart_to_serving_s": round(serving_s, 3), "restart_to_all_running_s": round(running_s, 3),
        "restart_to_all_checks_restarted_s": round(checks_s, 3), "restart_to_all_ended_s": round(end_s, 2),
        "ids_listed_after_restart": listed, "problems": problems[:20], "problem_count": len(problems),
        "targets": {"restart_to_all_running_s": 2.0},
        "met": {"all_running": running_s <= 2.0, "none_lost": not problems and listed == n},
    }
    lines = [
        f"{n} runs in flight (all {len(before)} p1 checks running, ramp-up {ramp:.1f} s), kill -9, "
        f"restart (state on {fs}):",
        f"  restart → control socket serving:     {serving_s * 1000:.0f} ms",
        f"  restart → every run 'running' again:  {running_s * 1000:.0f} ms   (target ≤ 2 s)",
        f"  restart → every p1 check re-started:  {checks_s * 1000:.0f} ms",
        f"  restart → all {n} runs ended:          {end_s:.1f} s",
        f"  none lost: {listed}/{n} ids listed after restart; "
        + ("every run succeeded, p1 2 attempts, exactly one commit per phase on its branch"
           if not problems else f"{len(problems)} PROBLEMS: {problems[:5]}"),
    ]
    emit(result, args.json, lines)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())

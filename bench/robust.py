"""Robustness figures (issue 13), each next to its peer measured in the same run.

1. **fuzz**: protocol fuzz cases run against a real daemon (``tests/fuzz_protocol.py``:
   valid request types, extreme values), with how many were refused at the door and
   how long it took; any ``internal`` answer or a daemon that stops serving fails it.
2. **slow clients**: RSS of the daemon while 300 clients each hold a partial 1 MiB
   frame, next to its idle RSS (the floor). With ``--uncapped`` the same load is also
   run with ``max_buffered_bytes`` = 1 GiB and no frame deadline (the old behaviour).
3. **/healthz under output**: p99 and max of ``GET /healthz`` while a check prints its
   maximum allowed output (``check_output_limit_bytes`` 1 GiB kept within
   ``max_output_bytes`` 16 MiB), next to p99 idle in the same run.

Usage: python bench/robust.py [--json] [--fuzz-examples N] [--clients N] [--uncapped]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.fuzz_protocol

from _common import (  # noqa: E402
    BenchDaemon,
    KeepAliveProbe,
    Sampler,
    emit,
    git,
    machine,
    make_repo,
    summary_ms,
    wait_until,
    workspace,
)
from autopack.protocol import GetStatus, Hello, Submit, encode_frame, parse_spec_text  # noqa: E402

FRAME = 1024 * 1024
OUTPUT_MAX = 1024 * 1024 * 1024


def fuzz(root: Path, examples: int) -> dict[str, Any]:
    from tests.fuzz_protocol import Probe, run_fuzz

    repo = make_repo(root / "fuzz-repo", n_files=2)
    with BenchDaemon(root, "fuzz", max_concurrent_runs=2) as d:
        d.start()
        probe = Probe(d.socket, lambda: d.proc is not None and d.proc.poll() is None)
        t0 = time.monotonic()
        cases = run_fuzz(probe, str(repo), ["no-such-run"], examples=examples)
        elapsed = time.monotonic() - t0
        alive = d.proc is not None and d.proc.poll() is None
    return {"examples": examples, "cases": cases, "seconds": round(elapsed, 1),
            "answers": dict(sorted(probe.codes.items())), "daemon_alive": alive}


def _slow_clients(d: BenchDaemon, n: int) -> tuple[list[socket.socket], int]:
    """``n`` connections that greet, announce a 1 MiB frame and send all of it but 1 byte."""
    conns: list[socket.socket] = []
    body = b"x" * (FRAME - 1)
    refused = 0
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(d.socket)
        s.sendall(encode_frame(Hello()))
        s.recv(4096)  # Welcome
        s.setblocking(False)
        try:
            s.send(struct.pack(">I", FRAME))
            sent = 0
            deadline = time.monotonic() + 2
            while sent < len(body) and time.monotonic() < deadline:
                try:
                    sent += s.send(body[sent:sent + 262144])
                except BlockingIOError:
                    time.sleep(0.001)
        except (BrokenPipeError, ConnectionResetError):
            refused += 1
        conns.append(s)
    return conns, refused


def slow_clients(root: Path, n: int, **config: Any) -> dict[str, Any]:
    name = "slow-" + ("uncapped" if config else "capped")
    with BenchDaemon(root, name, **config) as d:
        d.start()
        time.sleep(1)
        idle_kb = d.proc_status("VmRSS")
        conns, refused = _slow_clients(d, n)
        time.sleep(1.5)
        held_kb = d.proc_status("VmRSS")
        peak_kb = d.proc_status("VmHWM")
        alive = d.proc is not None and d.proc.poll() is None
        for s in conns:
            with contextlib.suppress(OSError):
                s.close()
    return {"clients": n, "idle_rss_mb": round(idle_kb / 1024, 1),
            "rss_with_clients_mb": round(held_kb / 1024, 1), "peak_rss_mb": round(peak_kb / 1024, 1),
            "refused_while_sending": refused, "daemon_alive": alive, "config": config}


def healthz_under_output(root: Path) -> dict[str, Any]:
    repo = make_repo(root / "out-repo", n_files=2)
    git(repo, "log", "-1")
    spec = parse_spec_text(
        'goal = "print the most a check may print"\n'
        f"[limits]\nmax_output_bytes = {16 * 1024 * 1024}\ncheck_output_limit_bytes = {OUTPUT_MAX}\n"
        '[[phases]]\nid = "loud"\ngoal = "print"\nkind = "command"\n'
        f'checks = ["head -c {OUTPUT_MAX} /dev/zero | tr \\"\\\\\\\\0\\" x"]\n', fmt="toml")
    with BenchDaemon(root, "loud") as d:
        d.start()
        probe = KeepAliveProbe(d.health_port)
        with Sampler(probe.get, 0.01) as idle:
            time.sleep(4)
        with d.client() as c:
            run_id = c.request(Submit(spec=spec, repo=str(repo))).run_id
        t0 = time.monotonic()
        with Sampler(probe.get, 0.01) as loud:
            def ended() -> bool:
                with d.client() as c:
                    return bool(c.request(GetStatus(run_id=run_id)).state
                                in ("succeeded", "failed", "cancelled"))
            wait_until(ended, timeout=600, poll_s=0.2, what="the loud check's end")
        took = time.monotonic() - t0
        with d.client() as c:
            st = c.request(GetStatus(run_id=run_id))
        peak_kb = d.proc_status("VmHWM")
        probe.close()
    return {"idle": summary_ms(idle.values), "during_output": summary_ms(loud.values),
            "output_bytes": OUTPUT_MAX, "check_seconds": round(took, 1), "run_state": st.state,
            "daemon_peak_rss_mb": round(peak_kb / 1024, 1),
            "probe_errors": len(idle.errors) + len(loud.errors)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--fuzz-examples", type=int, default=200)
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--uncapped", action="store_true",
                        help="also run the slow clients with the caps lifted (old behaviour)")
    args = parser.parse_args()
    with workspace("robust") as root:
        result: dict[str, Any] = {"machine": machine()}
        result["fuzz"] = fuzz(root, args.fuzz_examples)
        result["slow_clients"] = slow_clients(root, args.clients)
        if args.uncapped:
            result["slow_clients_uncapped"] = slow_clients(
                root, args.clients, max_buffered_bytes=1 << 30, frame_timeout_s=3600,
                max_connections=10_000)
        result["healthz"] = healthz_under_output(root)
    f, s, h = result["fuzz"], result["slow_clients"], result["healthz"]
    lines = [
        f"fuzz: {f['cases']} protocol cases in {f['examples']} batches, {f['seconds']} s; "
        f"answers {f['answers']}; daemon alive: {f['daemon_alive']}",
        f"slow clients: {s['clients']} clients each holding a partial 1 MiB frame: RSS "
        f"{s['idle_rss_mb']} MB idle -> {s['rss_with_clients_mb']} MB (peak {s['peak_rss_mb']} MB); "
        f"alive: {s['daemon_alive']}",
    ]
    if "slow_clients_uncapped" in result:
        u = result["slow_clients_uncapped"]
        lines.append(f"  same load, caps lifted (old behaviour): {u['idle_rss_mb']} MB idle -> "
                     f"{u['rss_with_clients_mb']} MB (peak {u['peak_rss_mb']} MB)")
    lines.append(
        f"/healthz p99: idle {h['idle']['p99_ms']} ms, during a check printing "
        f"{h['output_bytes'] >> 20} MiB {h['during_output']['p99_ms']} ms "
        f"(max {h['during_output']['max_ms']} ms; idle max {h['idle']['max_ms']} ms); "
        f"check took {h['check_seconds']} s, run {h['run_state']}, daemon peak RSS "
        f"{h['daemon_peak_rss_mb']} MB")
    emit(result, args.json, lines)
    return 0


if __name__ == "__main__":
    os.environ.pop("AUTOPACK_SOCKET", None)
    sys.exit(main())

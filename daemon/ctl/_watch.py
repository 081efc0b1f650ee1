"""``autopackctl wait`` and ``logs``: following runs.

On a terminal both keep a live line per run (phase n/m, attempt, elapsed, tokens),
redrawn in place; piped or with ``--json`` they print plain lines only (``wait``:
the final summary; ``logs``: one line, or one JSON object, per event).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from autopack.protocol import EventMsg, Follow, GetStatus, LogsEnd, RunStatus

from ._client import Client
from ._common import TERMINAL, connect, live_line, out_json, print_status, status_json
from ._errors import CtlError
from ._main import COMMANDS, EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT

CLEAR = "\r\x1b[K"
NOT_ENDED = ("queued", "running", "interrupted")


def register(sub: Any) -> None:
    """Add ``wait`` and ``logs`` to ``sub`` (argparse subparsers)."""
    run_help = "run id: full, any unique prefix, or 'latest'"
    p = sub.add_parser("wait", help=COMMANDS["wait"][1], description=COMMANDS["wait"][1])
    p.add_argument("run", nargs="*", metavar="RUN", help=run_help)
    p.add_argument("--all", action="store_true", help="every run not yet ended")
    p.add_argument("--timeout", type=float, metavar="S",
                   help=f"give up after S seconds: says so, exit {EXIT_TIMEOUT}")
    p.add_argument("--json", action="store_true", help="print {runs, timed_out} as JSON")
    p.set_defaults(func=cmd_wait)
    p = sub.add_parser("logs", help=COMMANDS["logs"][1], description=COMMANDS["logs"][1])
    p.add_argument("run", metavar="RUN", help=run_help)
    p.add_argument("-f", "--follow", action="store_true", help="keep following until the run ends")
    p.add_argument("--json", action="store_true", help="JSON Lines: one event object per line")
    p.set_defaults(func=cmd_logs)


def live(args: argparse.Namespace) -> bool:
    return not args.json and sys.stdout.isatty()


# ------------------------------------------------------------------ wait
def cmd_wait(args: argparse.Namespace) -> int:
    if args.timeout is not None and args.timeout < 0:
        raise CtlError("wait: --timeout must be >= 0")
    with connect(args) as client:
        ids = [client.request(GetStatus(run_id=r)).run_id for r in args.run]  # short ids, once
        if args.all:  # only runs not ended yet, page by page, oldest first
            live_ids = [st.run_id for st in client.runs(states=list(NOT_ENDED))]
            ids += [run_id for run_id in reversed(live_ids) if run_id not in ids]
    if not ids:
        if args.all:
            print("no runs in progress", file=sys.stderr)
            return EXIT_OK
        raise CtlError("nothing to wait for: give run ids or --all")
    return wait_for(args, ids, args.timeout)


def wait_for(args: argparse.Namespace, ids: list[str], timeout: float | None,
             submitted: list[str] | None = None) -> int:
    """Poll until every run in ``ids`` ended or ``timeout`` passed; print the summary.

    Returns 0 all succeeded, 1 one did not, 3 the timeout ran out (said on stderr).
    ``submitted``: the JSON document also carries ``run_id``/``run_ids`` (submit --wait).
    """
    deadline = time.monotonic() + timeout if timeout is not None else None
    shown = 0
    with connect(args) as client:
        while True:
            runs = [client.request(GetStatus(run_id=r)) for r in ids]
            pending = [st for st in runs if st.state not in TERMINAL]
            timed_out = bool(pending) and deadline is not None and time.monotonic() >= deadline
            if live(args):
                shown = _redraw(runs, shown)
            if not pending or timed_out:
                break
            time.sleep(0.25 if live(args) else 0.1)
    if shown:
        sys.stdout.write(f"\x1b[{shown}F\x1b[J")  # the summary replaces the live lines
    code = _print_summary(args, runs, timed_out, submitted)
    if timed_out:
        print(f"autopackctl: wait timed out after {timeout:g} s: "
              + ", ".join(f"{st.run_id} {st.state}" for st in pending), file=sys.stderr)
        return EXIT_TIMEOUT
    return code


def _redraw(runs: list[RunStatus], shown: int) -> int:
    now = time.time()
    out = f"\x1b[{shown}F" if shown else ""
    out += "".join(CLEAR + live_line(st, now) + "\n" for st in runs)
    sys.stdout.write(out)
    sys.stdout.flush()
    return len(runs)


def _print_summary(args: argparse.Namespace, runs: list[RunStatus], timed_out: bool,
                   submitted: list[str] | None) -> int:
    ok = all(st.state == "succeeded" for st in runs)
    if args.json:
        doc: dict[str, Any] = {}
        if submitted is not None:
            doc.update(run_id=submitted[0], run_ids=submitted)
        doc.update(runs=[status_json(st) for st in runs], timed_out=timed_out)
        out_json(doc)
    elif len(runs) == 1:
        print_status(runs[0])
    else:
        print(f"{'run':<26} {'state':<11} {'phases':<8} reason")
        for st in runs:
            done = sum(1 for p in st.phases if p.state == "succeeded")
            print(f"{st.run_id:<26} {st.state:<11} {done}/{len(st.phases):<6} {st.reason or ''}")
        n_ok = sum(1 for st in runs if st.state == "succeeded")
        print(f"{n_ok}/{len(runs)} succeeded")
    return EXIT_OK if ok else EXIT_FAILED


# ------------------------------------------------------------------ logs
def format_event(ev: EventMsg) -> str:
    where = ev.phase_id or "-"
    if ev.attempt:
        where += f"#{ev.attempt}"
    pl = dict(ev.payload)
    excerpt = pl.pop("excerpt", None)
    pl.pop("diff", None)  # builder_diff: the diff itself is for --json and the dashboard
    if ev.kind == "classified":  # the full details and mitigation are in --json and the report
        pl.pop("details", None)
        mitigation = pl.pop("mitigation", None) or {}
        pl["evidence"] = " | ".join(pl.get("evidence") or [])
        if mitigation.get("summary"):
            pl["mitigation"] = mitigation["summary"]
    detail = " ".join(f"{k}={v}" for k, v in pl.items() if v not in (None, "", [], {}, False))
    line = f"{time.strftime('%H:%M:%S', time.localtime(ev.ts))} {where:<16} {ev.kind:<18} {detail}"
    if excerpt and pl.get("exit_code") not in (0, None):
        tail = "\n".join(excerpt.rstrip().splitlines()[-8:])
        line += "\n" + "\n".join("      | " + s for s in tail.splitlines())
    return line


def cmd_logs(args: argparse.Namespace) -> int:
    """Events of a run; JSON Lines with ``--json``. On a terminal, ``-f`` keeps a live
    line under the events (from a second connection, refreshed every second)."""
    with connect(args) as client:
        run_id = client.request(GetStatus(run_id=args.run)).run_id  # a short id, once
        if args.follow and live(args):
            return _follow_live(args, client, run_id)
        for reply in client.stream(Follow(run_id=run_id, follow=args.follow)):
            if isinstance(reply, LogsEnd):
                return EXIT_FAILED if reply.state in ("failed", "cancelled") else EXIT_OK
            if args.json:
                out_json(reply)
            else:
                print(format_event(reply), flush=True)
    return EXIT_OK


def _follow_live(args: argparse.Namespace, client: Client, run_id: str) -> int:
    with connect(args) as status:
        client.send(Follow(run_id=run_id, follow=True))
        while True:
            reply = client.recv(timeout=1.0)
            sys.stdout.write(CLEAR)
            if isinstance(reply, LogsEnd):
                print_status(status.request(GetStatus(run_id=run_id)))
                return EXIT_FAILED if reply.state in ("failed", "cancelled") else EXIT_OK
            if reply is not None:
                sys.stdout.write(format_event(reply) + "\n")
            st = status.request(GetStatus(run_id=run_id))
            sys.stdout.write(live_line(st, time.time()))
            sys.stdout.flush()

"""The run commands of ``autopackctl``: submit, list, status, wait, logs, cancel,
report, health.

Plain blocking socket, no trio, no anthropic. Human output by default, ``--json``
for scripts (see docs/cli.md for the keys).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec
from autopack.protocol import (
    Cancel,
    EventMsg,
    Follow,
    GetHealth,
    GetReport,
    GetStatus,
    LogsEnd,
    RunStatus,
    SpecError,
    Submit,
    load_spec,
)

from ._client import Client, resolve_socket
from ._errors import CtlError
from ._main import COMMANDS, EXIT_FAILED, EXIT_OK

TERMINAL = ("succeeded", "failed", "cancelled")
NOT_ENDED = ("queued", "running", "interrupted")


def out_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(msgspec.to_builtins(obj), ensure_ascii=False) + "\n")
    sys.stdout.flush()


def connect(args: argparse.Namespace) -> Client:
    return Client(resolve_socket(getattr(args, "socket", None)), timeout=None)


def _ts(value: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value)) if value else "-"


def status_json(st: RunStatus) -> dict[str, Any]:
    return {"run_id": st.run_id, "state": st.state, "reason": st.reason,
            "phases": [{"id": p.id, "state": p.state, "attempts": p.attempts} for p in st.phases],
            "goal": st.goal, "repo": st.repo, "branch": st.branch, "arm": st.arm,
            "created_at": st.created_at, "started_at": st.started_at, "ended_at": st.ended_at,
            "sandbox": st.sandbox}


def print_status(st: RunStatus) -> None:
    print(f"run {st.run_id}: {st.state}" + (f" ({st.reason})" if st.reason else ""))
    print(f"  goal:   {st.goal}")
    print(f"  repo:   {st.repo}  branch {st.branch}")
    if st.sandbox and st.sandbox != "bwrap":
        print(f"  sandbox: {st.sandbox} — commands run UNCONFINED")
    for p in st.phases:
        extra = f" - {p.reason}" if p.reason else ""
        commit = f" {p.commit[:10]}" if p.commit else ""
        print(f"  {p.state:<10} {p.id} (attempts {p.attempts}){commit}{extra}")


# ------------------------------------------------------------------ commands
def cmd_submit(args: argparse.Namespace) -> int:
    if getattr(args, "raw", False):
        return submit_raw(args)
    specs = []
    for path in args.spec:
        try:
            specs.append(load_spec(path))
        except SpecError as exc:
            lines = [f"{p}: {r}" if p else r for p, r in exc.problems]
            raise CtlError(f"{path}: invalid run spec:\n  " + "\n  ".join(lines)) from None
        except OSError as exc:
            raise CtlError(f"{path}: {exc.strerror}") from None
    return _submit_specs(args, specs)


def _submit_specs(args: argparse.Namespace, specs: list[Any]) -> int:
    repo_arg = os.path.abspath(args.repo) if args.repo else None
    ids = []
    with connect(args) as client:
        for spec, path in zip(specs, args.spec, strict=False):
            repo = repo_arg
            if repo is None and spec.repo:
                repo = spec.repo if os.path.isabs(spec.repo) else os.path.abspath(
                    os.path.join(os.path.dirname(os.path.abspath(path)), spec.repo))
            if repo is None:
                repo = os.getcwd()
            from ._repo import prepare

            repo, spec = prepare(repo, spec,
                                 include_uncommitted=getattr(args, "include_uncommitted", False))
            reply = client.request(Submit(spec=spec, repo=repo))
            ids.append(reply.run_id)
            if args.json:
                out_json({"run_id": reply.run_id})
            else:
                print(reply.run_id)
    if args.wait:
        return wait_for(args, ids)
    return EXIT_OK


def submit_raw(args: argparse.Namespace) -> int:
    from autopack.actors._normalize import PlanError, normalize_file

    from ._normalize import review_text

    if len(args.spec) != 1:
        raise CtlError("--raw takes exactly one plan file")
    repo = os.path.abspath(args.repo or os.getcwd())
    try:
        result = normalize_file(args.spec[0], repo)
    except PlanError as exc:
        raise CtlError(str(exc)) from None
    sys.stderr.write(review_text(result) + "\n")
    if not args.yes:
        if not sys.stdin.isatty():
            raise CtlError("refusing to submit an unreviewed plan without a terminal: "
                           "review it with 'autopackctl normalize' or pass --yes")
        answer = input("Submit this run? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("not submitted", file=sys.stderr)
            return EXIT_FAILED
    args.repo = repo
    return _submit_specs(args, [result.spec])


def cmd_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        runs = list(client.runs(state=args.state, limit=args.limit if args.limit > 0 else None))
    if args.json:
        for st in runs:
            out_json(status_json(st))
        return EXIT_OK
    if not runs:
        print("no runs")
    for st in runs:
        done = sum(1 for p in st.phases if p.state == "succeeded")
        print(f"{st.run_id}  {st.state:<11} {done}/{len(st.phases)} phases  "
              f"{_ts(st.created_at)}  {st.goal[:60]}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with connect(args) as client:
        st = client.request(GetStatus(run_id=args.run))
    if args.json:
        out_json(status_json(st))
    else:
        print_status(st)
    return EXIT_FAILED if st.state in ("failed", "cancelled") else EXIT_OK


def wait_for(args: argparse.Namespace, ids: list[str], timeout: float | None = None) -> int:
    deadline = time.monotonic() + timeout if timeout else None
    final: dict[str, RunStatus] = {}
    with connect(args) as client:
        pending = list(ids)
        delay = 0.05
        while pending:
            for run_id in list(pending):
                st = client.request(GetStatus(run_id=run_id))
                if st.state in TERMINAL:
                    final[run_id] = st
                    pending.remove(run_id)
            if not pending:
                break
            if deadline is not None and time.monotonic() > deadline:
                for run_id in pending:
                    final[run_id] = client.request(GetStatus(run_id=run_id))
                break
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
    return _print_summary(args, [final[i] for i in ids])


def _print_summary(args: argparse.Namespace, runs: list[RunStatus]) -> int:
    ok = all(st.state == "succeeded" for st in runs)
    if args.json:
        for st in runs:
            out_json(status_json(st))
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


def cmd_wait(args: argparse.Namespace) -> int:
    ids = list(args.run)
    if args.all:
        with connect(args) as client:  # only runs not ended yet, page by page
            live = [st.run_id for st in client.runs(states=list(NOT_ENDED))]
        ids += [run_id for run_id in reversed(live) if run_id not in ids]
    if not ids:
        if args.all:
            print("no runs in progress", file=sys.stderr)
            return EXIT_OK
        raise CtlError("nothing to wait for: give run ids or --all")
    return wait_for(args, ids, args.timeout)


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
    with connect(args) as client:
        for reply in client.stream(Follow(run_id=args.run, follow=args.follow)):
            if isinstance(reply, LogsEnd):
                return EXIT_FAILED if reply.state in ("failed", "cancelled") else EXIT_OK
            if args.json:
                out_json(reply)
            else:
                print(format_event(reply), flush=True)
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    with connect(args) as client:
        reply = client.request(Cancel(run_id=args.run))
    if args.json:
        out_json({"run_id": args.run, "cancelled": True, "message": reply.message})
    else:
        print(reply.message)
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    with connect(args) as client:
        reply = client.request(GetReport(run_id=args.run))
    if args.json:
        out_json(reply.data)
    else:
        sys.stdout.write(reply.markdown)
    return EXIT_FAILED if reply.data.get("state") in ("failed", "cancelled") else EXIT_OK


def cmd_health(args: argparse.Namespace) -> int:
    with connect(args) as client:
        h = client.request(GetHealth())
    if args.json:
        out_json(h)
    else:
        state = "ready" if h.ready else "NOT READY"
        if h.ready and h.degraded:
            state = "ready (degraded: " + ", ".join(h.degraded) + ")"
        print(f"autopackd {h.version} pid {client.welcome.pid}: {state}")
        for part, st in sorted(h.parts.items()):
            print(f"  {part:<12} {st}")
        if h.sandbox:
            print(f"  {'sandbox':<12} {h.sandbox} ({h.sandbox_detail})")
        print("  runs: " + (", ".join(f"{k} {v}" for k, v in sorted(h.runs.items())) or "none"))
    return EXIT_OK if h.ready else EXIT_FAILED


# ------------------------------------------------------------------ parser
def register(sub: Any) -> None:
    """Add the run commands (submit, list, status, wait, logs, cancel, report, health)."""

    def add(name: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        help_ = COMMANDS[name][1]
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)
        return p

    p = add("submit", cmd_submit)
    p.add_argument("spec", nargs="+", help="spec file(s), or one plan file with --raw")
    p.add_argument("--repo", help="repository (overrides the spec's repo; default: spec, then cwd)")
    p.add_argument("--wait", action="store_true", help="wait for the run(s) to end")
    p.add_argument("--raw", action="store_true", help="the file is a plan in Markdown/text: "
                                                      "normalize, review, confirm, submit")
    p.add_argument("--yes", "-y", action="store_true", help="with --raw: submit without asking")
    p.add_argument("--include-uncommitted", action="store_true",
                   help="make uncommitted changes to tracked files the run's base (a snapshot "
                        "commit through a temporary index; your checkout and index stay as "
                        "they are); without it, submit refuses when there are any")
    p = add("list", cmd_list)
    p.add_argument("--state", help="only runs in this state")
    p.add_argument("--limit", type=int, default=50,
                   help="at most this many, newest first (default 50; 0 = all, fetched page by page)")
    p = add("status", cmd_status)
    p.add_argument("run")
    p = add("wait", cmd_wait)
    p.add_argument("run", nargs="*")
    p.add_argument("--all", action="store_true", help="every run not yet ended")
    p.add_argument("--timeout", type=float, help="give up waiting after S seconds (exit 1)")
    p = add("logs", cmd_logs)
    p.add_argument("run")
    p.add_argument("-f", "--follow", action="store_true", help="keep following until the run ends")
    p = add("cancel", cmd_cancel)
    p.add_argument("run")
    p = add("report", cmd_report)
    p.add_argument("run")
    add("health", cmd_health)

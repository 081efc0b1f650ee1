"""The run commands of ``autopackctl``: submit, list, status, cancel, report, health,
retry, diff (``wait`` and ``logs`` are in ``_watch``).

Plain blocking socket, no trio, no anthropic. Human output by default, ``--json``
for scripts: one JSON document per command (docs/cli.md lists the keys).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from autopack.protocol import (
    Cancel,
    GetDiff,
    GetHealth,
    GetReport,
    GetStatus,
    Retry,
    SpecError,
    Submit,
    load_spec,
)

from ._common import RUN_STATES, connect, out_json, print_status, status_json, ts
from ._errors import CtlError
from ._main import COMMANDS, EXIT_FAILED, EXIT_OK


# ------------------------------------------------------------------ commands
def cmd_submit(args: argparse.Namespace) -> int:
    if getattr(args, "raw", False):
        return submit_raw(args)
    specs = []
    for path in args.spec:
        try:
            specs.append(load_spec(path))
        except SpecError as exc:
            raise CtlError(f"{path}: invalid run spec: " + spec_problems(exc)) from None
        except OSError as exc:
            raise CtlError(f"{path}: {exc.strerror}") from None
    return _submit_specs(args, specs)


def spec_problems(exc: SpecError) -> str:
    """Every problem of a spec on one line: ``phases[0].chekcs: unknown field (did you
    mean 'checks'?); goal: required``."""
    return "; ".join(f"{p}: {r}" if p else r for p, r in exc.problems)


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
            if not args.json:
                print(reply.run_id, flush=True)
    if args.wait:
        from ._watch import wait_for

        return wait_for(args, ids, None, submitted=ids)
    if args.json:
        out_json({"run_id": ids[0], "run_ids": ids})
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
        out_json({"runs": [status_json(st) for st in runs]})
        return EXIT_OK
    if not runs:
        print("no runs")
    for st in runs:
        done = sum(1 for p in st.phases if p.state == "succeeded")
        print(f"{st.run_id}  {st.state:<11} {done}/{len(st.phases)} phases  "
              f"{ts(st.created_at)}  {st.goal[:60]}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with connect(args) as client:
        st = client.request(GetStatus(run_id=args.run))
    if args.json:
        out_json(status_json(st))
    else:
        print_status(st)
    return EXIT_FAILED if st.state in ("failed", "cancelled") else EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    with connect(args) as client:
        run_id = client.request(GetStatus(run_id=args.run)).run_id  # a short id, once
        reply = client.request(Cancel(run_id=run_id))
    if args.json:
        out_json({"run_id": run_id, "cancelled": True, "message": reply.message})
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
            info = h.details.get(part) if st != "ok" else None
            extra = (f" (restarts {info.get('restarts', 0)}, errors {info.get('errors', 0)}; "
                     f"last: {info.get('last_error')})") if info else ""
            print(f"  {part:<12} {st}{extra}")
        for name, child in sorted(h.children.items()):
            if child.get("restarts"):
                print(f"  {name:<12} restarted {child['restarts']} time(s), "
                      f"{child.get('recent_restarts', 0)} within {child.get('window_s', 0):g} s "
                      f"(limit {child.get('limit', 0)}); last: {child.get('last_error')}")
        if h.sandbox:
            print(f"  {'sandbox':<12} {h.sandbox} ({h.sandbox_detail})")
        print("  runs: " + (", ".join(f"{k} {v}" for k, v in sorted(h.runs.items())) or "none"))
    return EXIT_OK if h.ready else EXIT_FAILED


def cmd_retry(args: argparse.Namespace) -> int:
    with connect(args) as client:
        old = client.request(GetStatus(run_id=args.run)).run_id
        reply = client.request(Retry(run_id=old, from_phase=args.from_phase))
    if args.wait:
        from ._watch import wait_for

        return wait_for(args, [reply.run_id], None, submitted=[reply.run_id])
    if args.json:
        out_json({"run_id": reply.run_id, "retry_of": old})
    else:
        print(reply.run_id)
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    with connect(args) as client:
        d = client.request(GetDiff(run_id=args.run))
    if args.json:
        out_json({"run_id": d.run_id, "repo": d.repo, "base": d.base, "head": d.head, "stat": d.stat,
                  "patch": d.patch, "truncated": d.truncated})
        return EXIT_OK
    sys.stdout.write((d.stat + "\n") if args.stat else d.patch)
    if d.truncated:
        import shlex

        print(f"autopackctl: the diff is cut to fit one reply; all of it: git -C "
              f"{shlex.quote(d.repo)} diff {d.base} {d.head}", file=sys.stderr)
    return EXIT_OK


# ------------------------------------------------------------------ parser
def register(sub: Any) -> None:
    """Add the run commands (submit, list, status, cancel, report, health, retry, diff)."""

    def add(name: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        help_ = COMMANDS[name][1]
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)
        return p

    run_help = "run id: full, any unique prefix, or 'latest'"
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
    p.add_argument("--state", choices=RUN_STATES, help="only runs in this state")
    p.add_argument("--limit", type=_count, default=50,
                   help="at most this many, newest first (default 50; 0 = all, fetched page by page)")
    for name, func in (("status", cmd_status), ("cancel", cmd_cancel), ("report", cmd_report)):
        add(name, func).add_argument("run", metavar="RUN", help=run_help)
    add("health", cmd_health)
    p = add("retry", cmd_retry)
    p.add_argument("run", metavar="RUN", help="the failed or cancelled run: " + run_help)
    p.add_argument("--from", dest="from_phase", metavar="PHASE",
                   help="run again from this phase (default: the first that did not succeed); "
                        "earlier phases' commits are kept")
    p.add_argument("--wait", action="store_true", help="wait for the new run to end")
    p = add("diff", cmd_diff)
    p.add_argument("run", metavar="RUN", help=run_help)
    p.add_argument("--stat", action="store_true", help="only the summary of changed files")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (all) or more, got {value}")
    return value

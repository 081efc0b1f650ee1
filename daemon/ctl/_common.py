"""Helpers shared by the subcommands that talk to the daemon: connecting, JSON output,
the run status layout."""

from __future__ import annotations

import sys
import time
from typing import Any

from autopack.protocol import RunStatus

from ._client import Client, resolve_socket

TERMINAL = ("succeeded", "failed", "cancelled")
RUN_STATES = ("queued", "running", "interrupted", "succeeded", "failed", "cancelled")


def out_json(obj: Any) -> None:
    """Write ``obj`` as one line of JSON (a whole document, or one line of a stream)."""
    import json

    import msgspec

    sys.stdout.write(json.dumps(msgspec.to_builtins(obj), ensure_ascii=False) + "\n")
    sys.stdout.flush()


def connect(args: Any, timeout: float | None = None) -> Client:
    """A client on ``--socket`` (or the default socket); the caller closes it."""
    return Client(resolve_socket(getattr(args, "socket", None)), timeout=timeout)


def ts(value: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value)) if value else "-"


def status_json(st: RunStatus) -> dict[str, Any]:
    """The ``--json`` object of one run (docs/cli.md lists the keys)."""
    return {"run_id": st.run_id, "state": st.state, "reason": st.reason,
            "phases": [{"id": p.id, "state": p.state, "attempts": p.attempts, "kind": p.kind,
                        "reason": p.reason, "commit": p.commit} for p in st.phases],
            "goal": st.goal, "repo": st.repo, "branch": st.branch, "arm": st.arm,
            "created_at": st.created_at, "started_at": st.started_at, "ended_at": st.ended_at,
            "tokens": st.tokens, "sandbox": st.sandbox, "budget": st.budget}


def print_status(st: RunStatus) -> None:
    print(f"run {st.run_id}: {st.state}" + (f" ({st.reason})" if st.reason else ""))
    print(f"  goal:   {st.goal}")
    print(f"  repo:   {st.repo}  branch {st.branch}")
    if st.sandbox and st.sandbox != "bwrap":
        print(f"  sandbox: {st.sandbox} — commands run UNCONFINED")
    if st.budget:
        from autopack.daemon._report import budget_line

        print(f"  budget: {budget_line(st.budget)}")
    for p in st.phases:
        extra = f" - {p.reason}" if p.reason else ""
        commit = f" {p.commit[:10]}" if p.commit else ""
        print(f"  {p.state:<10} {p.id} (attempts {p.attempts}){commit}{extra}")


def elapsed(st: RunStatus, now: float) -> str:
    start = st.started_at or st.created_at
    secs = int(max(0.0, (st.ended_at or now) - start)) if start else 0
    return f"{secs // 3600}:{secs // 60 % 60:02d}:{secs % 60:02d}" if secs >= 3600 \
        else f"{secs // 60}:{secs % 60:02d}"


def live_line(st: RunStatus, now: float) -> str:
    """One line of progress: ``ID  running  phase 2/3 build-api  attempt 1  0:42  1,234 tok``."""
    n = len(st.phases)
    idx = next((i for i, p in enumerate(st.phases) if p.state in ("running", "queued")), None)
    if idx is None or st.state in TERMINAL:
        idx = next((i for i, p in enumerate(st.phases) if p.state in ("failed", "cancelled")),
                   n - 1)
    phase = st.phases[idx] if st.phases else None
    where = f"phase {idx + 1}/{n} {phase.id}" if phase else "no phases"
    attempt = f"attempt {phase.attempts}" if phase and phase.attempts else "attempt -"
    tokens = f"{st.tokens:,} tok" if st.tokens is not None else "- tok"
    return f"{st.run_id}  {st.state:<11} {where}  {attempt}  {elapsed(st, now)}  {tokens}"

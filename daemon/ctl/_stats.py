"""``autopackctl stats``: success rate, detection rate, tokens and dollars spent, cache hit rate, A/B arms.

Blocking client only (no trio, no anthropic, no prometheus_client): starts fast.
The daemon computes the figures (:func:`autopack.daemon._stats.compute_stats`);
this module asks for them and lays them out with :func:`format_stats`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from autopack.protocol import GetStats, RemoteError, Stats

from ._client import Client, DaemonUnavailable, resolve_socket

EXIT_OK, EXIT_USAGE = 0, 2


def register(sub: Any) -> None:
    """Add the ``stats`` subcommand to ``sub`` (argparse subparsers)."""
    p = sub.add_parser(
        "stats", help="success rate, failures classified vs sent to the Doctor, tokens",
        description="Figures over the run history: success rate, failures classified "
                    "deterministically vs sent to the Doctor (detection rate), tokens spent "
                    "and avoided, attempts and Doctor calls per run, mean time per phase.")
    p.add_argument("--since", metavar="DURATION",
                   help="only runs created in the last DURATION (90s, 30m, 24h, 7d, 1w)")
    p.add_argument("--by-arm", action="store_true",
                   help="compare the A/B arms (hardened vs baseline) side by side")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.set_defaults(func=cmd_stats)


def _fail(message: str) -> int:
    print(f"autopackctl: {message}", file=sys.stderr)
    return EXIT_USAGE


def cmd_stats(args: argparse.Namespace) -> int:
    """``stats``: 0 with the figures; 2 on a bad ``--since`` or when the daemon cannot answer."""
    since_s: float | None = None
    if args.since is not None:
        from autopack.daemon._stats import parse_duration  # the pure stats core, only here

        try:
            since_s = parse_duration(args.since)
        except ValueError as exc:
            return _fail(f"--since: {exc}")
    try:
        with Client(resolve_socket(getattr(args, "socket", None))) as client:
            reply = client.request(GetStats(since_s=since_s, by_arm=args.by_arm))
    except RemoteError as exc:
        return _fail(f"{exc.message} [{exc.code}]")
    except DaemonUnavailable as exc:
        return _fail(str(exc))
    if not isinstance(reply, Stats):
        return _fail(f"unexpected reply from autopackd: {type(reply).__name__}")
    if args.json:
        print(json.dumps(reply.data, ensure_ascii=False))
    else:
        print(format_stats(reply.data, since=args.since))
    return EXIT_OK


# ---------------------------------------------------------------- formatting
def _int(value: Any) -> str:
    return f"{int(value):,}" if isinstance(value, int | float) else "-"


def _pct(value: Any) -> str:
    return f"{value * 100:.1f}%" if isinstance(value, int | float) else "-"


def _num(value: Any, unit: str = "") -> str:
    return f"{value:,.2f}{unit}" if isinstance(value, int | float) else "-"


def _usd(value: Any) -> str:
    return f"${value:,.4f}" if isinstance(value, int | float) else "-"


def _secs(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


_Row = tuple[str, Callable[[dict[str, Any]], str]]

_ROWS: list[_Row] = [
    ("runs", lambda d: _int(d.get("runs_total"))),
    ("  succeeded", lambda d: _int(d.get("runs_by_state", {}).get("succeeded", 0))),
    ("  failed", lambda d: _int(d.get("runs_by_state", {}).get("failed", 0))),
    ("  cancelled", lambda d: _int(d.get("runs_by_state", {}).get("cancelled", 0))),
    ("  running", lambda d: _int(d.get("runs_by_state", {}).get("running", 0))),
    ("  queued", lambda d: _int(d.get("runs_by_state", {}).get("queued", 0))),
    ("  interrupted", lambda d: _int(d.get("runs_by_state", {}).get("interrupted", 0))),
    ("success rate", lambda d: _pct(d.get("success_rate"))),
    ("failures", lambda d: _int(d.get("failures_total"))),
    ("  classified", lambda d: _int(d.get("failures_classified"))),
    ("  unclassified", lambda d: _int(d.get("failures_unclassified"))),
    ("  sent to Doctor", lambda d: _int(d.get("failures_to_doctor"))),
    ("detection rate", lambda d: _pct(d.get("detection_rate"))),
    ("tokens spent", lambda d: _int(d.get("tokens_spent", {}).get("total"))),
    ("  input", lambda d: _int(d.get("tokens_spent", {}).get("input"))),
    ("  output", lambda d: _int(d.get("tokens_spent", {}).get("output"))),
    ("  cache write", lambda d: _int(d.get("tokens_spent", {}).get("cache_creation"))),
    ("  cache read", lambda d: _int(d.get("tokens_spent", {}).get("cache_read"))),
    ("cache hit rate", lambda d: _pct(d.get("cache_hit_rate"))),
    ("cost", lambda d: _usd(d.get("cost_usd"))),
    *((f"  {role}", (lambda d, r=role: _usd(d.get("cost_usd_by_role", {}).get(r, 0.0))))
      for role in ("builder", "doctor")),
    ("cost / run", lambda d: _usd(d.get("cost_usd_per_run"))),
    ("tokens avoided", lambda d: _int(d.get("tokens_avoided"))),
    ("tokens / run", lambda d: _num(d.get("tokens_per_run"))),
    ("attempts / run", lambda d: _num(d.get("attempts_per_run"))),
    ("Doctor calls / run", lambda d: _num(d.get("doctor_calls_per_run"))),
    ("mean phase time", lambda d: _secs(d.get("mean_phase_s"))),
]


def _table(rows: list[list[str]]) -> list[str]:
    """Left-aligned labels, right-aligned values; the first row may be a header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        out.append("  ".join(cells).rstrip())
    return out


def format_stats(data: dict[str, Any], *, since: str | None = None) -> str:
    """Human layout of ``compute_stats`` output: one value column, or one per arm.

    Undefined rates and means (no ended runs, no failures) show as ``-``.
    ``since`` is the user's ``--since`` text, shown in the title; without it the
    title uses ``data["since_ts"]`` when present.
    """
    if since:
        title = f"autopack stats, runs of the last {since}"
    elif isinstance(data.get("since_ts"), int | float):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(data["since_ts"]))
        title = f"autopack stats, runs since {when}"
    else:
        title = "autopack stats, all runs"
    arms: dict[str, dict[str, Any]] = data["arms"] if "arms" in data else {"value": data}
    names = list(arms)
    rows = [["", *names]] if "arms" in data else []
    rows += [[label, *(fn(arms[a]) for a in names)] for label, fn in _ROWS]
    patterns: dict[str, int] = {}
    for a in names:
        for p, n in arms[a].get("failures_by_pattern", {}).items():
            patterns[p] = patterns.get(p, 0) + int(n)
    if patterns:
        rows.append(["failures by pattern", *("" for _ in names)])
        for p in sorted(patterns, key=lambda k: (-patterns[k], k)):
            rows.append([f"  {p}", *(_int(arms[a].get("failures_by_pattern", {}).get(p, 0))
                                      for a in names)])
    return "\n".join([title, *_table(rows)])

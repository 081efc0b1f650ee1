"""``autopackctl normalize PLAN``: turn a Markdown/plain-text plan into a run spec to review.

No daemon needed: the deterministic normalizer runs in-process (pure code,
no trio, no anthropic). ``--llm`` asks Claude instead, through the seam
the daemon (``NormalizePlan(llm=True)``; autopackctl never imports the SDK,
so ``anthropic`` never loads otherwise); until that module exists the command
says "LLM normalization is not available" and exits 2.

Exit status: 0 the spec was produced (even below the confidence threshold:
the output says so), 1 writing ``-o FILE`` failed, 2 bad input or usage
(one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from autopack.actors._normalize import (
    NormalizeResult,
    PlanError,
    normalize_file,
    normalize_result_json,
    result_from_raw_spec,
)
from autopack.protocol import spec_to_builtins, spec_to_toml

__all__ = ["register", "review_text"]


def register(sub: Any) -> None:
    """Add the ``normalize`` subcommand to ``sub`` (an argparse subparsers object)."""
    p = sub.add_parser(
        "normalize", help="turn a Markdown/text plan into a run spec (no daemon needed)",
        description="Normalize a plan written in Markdown or plain text into a run spec, "
                    "with a confidence per phase and warnings for every guess.")
    p.add_argument("plan", metavar="PLAN", help="the plan file (Markdown or plain text)")
    p.add_argument("--repo", metavar="PATH",
                   help="target git repository: matches scope to its paths and detects "
                        "default checks from its toolchain")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="also write the spec to FILE (.toml or .json by extension)")
    p.add_argument("--json", action="store_true",
                   help="print the spec plus confidence, warnings and phases_confidence as JSON")
    p.add_argument("--threshold", type=float, default=0.6, metavar="X",
                   help="confidence below X is flagged with a recommendation (default 0.6)")
    p.add_argument("--llm", action="store_true",
                   help="let Claude fill the spec (through the run spec's JSON schema)")
    p.set_defaults(func=cmd_normalize)


def _fail(message: str) -> int:
    print(f"autopackctl normalize: {message}", file=sys.stderr)
    return 2


def review_text(result: NormalizeResult) -> str:
    """The spec as TOML, then the confidence per phase with reasons, then the warnings.

    What a person reads before a normalized plan is submitted (``normalize``
    and ``submit --raw`` print it).
    """
    lines = [spec_to_toml(result.spec).rstrip(), ""]
    flag = "  — LOW: review and edit before submitting" if result.below_threshold else ""
    lines.append(f"# confidence {result.confidence:.2f}{flag}")
    width = max((len(r.id) for r in result.phases), default=0)
    for r in result.phases:
        lines.append(f"#   {r.id:<{width}}  {r.confidence:.2f}")
        lines += [f"#       {reason}" for reason in r.reasons]
    if result.warnings:
        lines.append("# warnings:")
        lines += [f"#   - {w}" for w in result.warnings]
    return "\n".join(lines)


def _llm_result(args: argparse.Namespace, draft: NormalizeResult, repo: str | None) -> NormalizeResult:
    """Ask the daemon to have Claude fill the spec: autopackctl itself never imports the
    SDK, and the call shares the daemon's key, rate limiter and circuit breaker."""
    from autopack.protocol import NormalizePlan, RemoteError

    from ._client import Client, DaemonUnavailable, resolve_socket

    with open(args.plan, encoding="utf-8") as fh:  # normalize_file has checked it already
        text = fh.read()
    try:
        with Client(resolve_socket(getattr(args, "socket", None)), timeout=None) as client:
            reply = client.request(NormalizePlan(plan=text, repo=repo, llm=True))
    except DaemonUnavailable as exc:
        raise PlanError(f"LLM normalization is not available: {exc}") from None
    except RemoteError as exc:
        raise PlanError(f"LLM normalization failed: {exc.message}") from None
    return result_from_raw_spec(reply.spec, repo=draft.spec.repo, threshold=args.threshold,
                                source="the LLM")


def cmd_normalize(args: argparse.Namespace) -> int:
    """Normalize ``args.plan``; print the review (or JSON); write ``-o`` if asked."""
    if not 0.0 <= args.threshold <= 1.0:
        return _fail(f"--threshold must be between 0 and 1, got {args.threshold}")
    out = args.output
    if out is not None and not out.endswith((".toml", ".json")):
        return _fail(f"-o {out!r}: the file name must end in .toml or .json")
    repo = os.path.abspath(args.repo) if args.repo else None
    try:
        result = normalize_file(args.plan, repo, threshold=args.threshold)
        if args.llm:
            result = _llm_result(args, result, repo)
    except PlanError as exc:
        return _fail(exc.message)
    if args.json:
        sys.stdout.write(json.dumps(normalize_result_json(result), ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(review_text(result) + "\n")
    if out is not None:
        text = (json.dumps(spec_to_builtins(result.spec), ensure_ascii=False, indent=2) + "\n"
                if out.endswith(".json") else spec_to_toml(result.spec))
        try:
            with open(out, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            print(f"autopackctl normalize: cannot write {out!r}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 1
        print(f"wrote {out}", file=sys.stderr)
    return 0

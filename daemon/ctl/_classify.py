"""``autopackctl classify FILE|-`` and ``autopackctl patterns``: the failure classifier, offline.

No daemon needed: the pure classifier core runs in-process (no trio, no
anthropic, no anyio). ``--command`` is part of the evidence (``timeout -s KILL
5 make`` ending in 137 is a time limit, not memory).

Exit status: 0 when the output was classified or no pattern was found (both
are answers), 2 when the file cannot be read or the arguments are wrong (one
line on stderr).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import msgspec
from autopack.actors.classifier import PATTERNS, classify
from autopack.protocol import Classification, ClassifyContext

__all__ = ["classification_json", "cmd_classify", "cmd_patterns", "register"]

MAX_INPUT = 256 * 1024 * 1024  # refuse to read more than this (a log is never that large)


def register(sub: Any) -> None:
    """Add the ``classify`` and ``patterns`` subcommands to ``sub`` (an argparse subparsers object)."""
    p = sub.add_parser(
        "classify", help="classify a failure log (no daemon needed)",
        description="Name a failed command's output with one failure pattern (or none), "
                    "with the deciding evidence, extracted details and the mitigation.")
    p.add_argument("file", metavar="FILE", help="the output to classify, or - for stdin")
    p.add_argument("--exit-code", type=int, default=None, metavar="N", help="the command's exit status")
    p.add_argument("--command", default=None, metavar="CMD", help="the command that produced the output")
    p.add_argument("--repo-module", action="append", default=[], metavar="NAME",
                   help="a top-level module/package of the repository itself (repeatable)")
    p.add_argument("--lockfile-manager", choices=["npm", "yarn", "pnpm"], default=None,
                   help="the Node package manager the repository uses")
    p.add_argument("--json", action="store_true",
                   help='print {"pattern", "evidence", "details", "mitigation"} as JSON')
    p.set_defaults(func=cmd_classify)

    q = sub.add_parser("patterns", help="list the failure patterns",
                       description="List the failure pattern ids with a one-line description.")
    q.add_argument("--json", action="store_true", help='print {"patterns": [{"id", "description"}]} as JSON')
    q.set_defaults(func=cmd_patterns)


def _fail(message: str) -> int:
    print(f"autopackctl classify: {message}", file=sys.stderr)
    return 2


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read(MAX_INPUT)
    with open(path, "rb") as f:
        return f.read(MAX_INPUT)


def looks_binary(data: bytes) -> bool:
    """NUL bytes, or mostly bytes that are neither text nor UTF-8, in the first 8 KiB (as
    git and grep decide). ANSI colour codes and a few stray bytes are still text."""
    head = data[:8192]
    if b"\0" in head:
        return True
    text = head.decode("utf-8", "replace")
    bad = sum(1 for ch in text if ch == "\ufffd" or (ch < " " and ch not in "\t\n\r\f\b\x1b"))
    return bool(text) and bad / len(text) > 0.3


def classification_json(c: Classification) -> dict[str, Any]:
    """The stable ``--json`` object (add keys freely, rename none)."""
    return {
        "pattern": c.pattern,
        "evidence": list(c.evidence),
        "details": msgspec.to_builtins(c.details),
        "mitigation": msgspec.to_builtins(c.mitigation) if c.mitigation is not None else None,
        "description": PATTERNS.get(c.pattern) if c.pattern else None,
    }


def cmd_classify(args: Any) -> int:
    try:
        data = _read(args.file)
    except OSError as exc:
        return _fail(f"cannot read {args.file}: {exc.strerror or exc}")
    if looks_binary(data):
        return _fail(f"{'stdin' if args.file == '-' else args.file} is binary data, not a "
                     "command's text output; nothing to classify")
    ctx = ClassifyContext(command=args.command, repo_modules=list(args.repo_module),
                          lockfile_manager=args.lockfile_manager)
    c = classify(data, args.exit_code, ctx)
    if args.json:
        sys.stdout.write(json.dumps(classification_json(c), ensure_ascii=False) + "\n")
        return 0
    print(f"pattern:    {c.pattern or 'none (ask the Doctor)'}")
    if c.pattern:
        print(f"            {PATTERNS[c.pattern]}")
    label = "evidence:" if c.pattern else "last lines:"
    for i, line in enumerate(c.evidence):
        print(f"{label if i == 0 else '':<12}{line}")
    shown = {k: v for k, v in c.details.items() if k != "excerpt"}
    for i, (k, v) in enumerate(shown.items()):
        print(f"{'details:' if i == 0 else '':<12}{k} = {v}")
    if c.mitigation is not None:
        print(f"mitigation: {c.mitigation.kind}: {c.mitigation.summary}")
        if c.mitigation.hint:
            first = c.mitigation.hint.splitlines()[0]
            print(f"hint:       {first}")
    return 0


def cmd_patterns(args: Any) -> int:
    if args.json:
        rows = [{"id": pid, "description": text} for pid, text in PATTERNS.items()]
        sys.stdout.write(json.dumps({"patterns": rows}) + "\n")
        return 0
    width = max(len(p) for p in PATTERNS)
    for pid, text in PATTERNS.items():
        print(f"{pid:<{width}}  {text}")
    return 0

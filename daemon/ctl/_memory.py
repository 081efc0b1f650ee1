"""``autopackctl context`` and ``autopackctl lessons``: what memory would inject, what it learned.

Blocking client only (no trio, no anyio): these commands must start fast.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from typing import Any

from autopack.protocol import ContextReply, GetContext, GetLessons, Lessons, RemoteError

from ._client import Client, DaemonUnavailable, resolve_socket


def register(sub: Any) -> None:
    """Add the ``context`` and ``lessons`` subcommands to ``sub`` (argparse subparsers)."""
    p = sub.add_parser("context", help="print the intention context memory would inject now",
                       description="Print exactly the context the memory actor would inject "
                                   "into a prompt now, then its size in UTF-8 bytes.")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--phase", metavar="ID", help="phase id (default: the run's current phase)")
    p.add_argument("--role", choices=("builder", "doctor"), default="builder")
    p.add_argument("--json", action="store_true", help='print {"text", "bytes", "degraded"}')
    p.set_defaults(func=cmd_context)

    p = sub.add_parser("lessons", help="list what memory learned (failure -> fix)",
                       description="List lessons: failure signatures and the fixes that "
                                   "resolved them, newest first, or best match with --search.")
    p.add_argument("--repo", metavar="PATH", help="only lessons for this repository")
    p.add_argument("--search", metavar="TEXT", help="full-text search (BM25 ranking)")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    p.add_argument("--json", action="store_true", help='print {"lessons": [...]} as JSON')
    p.set_defaults(func=cmd_lessons)


def _fail(message: str) -> int:
    print(f"autopackctl: {message}", file=sys.stderr)
    return 2


def _request(args: argparse.Namespace, msg: GetContext | GetLessons) -> Any:
    with Client(resolve_socket(getattr(args, "socket", None))) as client:
        return client.request(msg)


def cmd_context(args: argparse.Namespace) -> int:
    """``context RUN``: 0 with the text; 2 when the daemon cannot be asked.

    A degraded memory is not an error of the command: the output says so
    (``degraded`` in JSON, a note on stderr otherwise).
    """
    try:
        reply = _request(args, GetContext(run_id=args.run_id, phase=args.phase, role=args.role))
    except (DaemonUnavailable, RemoteError) as exc:
        return _fail(str(exc))
    if not isinstance(reply, ContextReply):
        return _fail(f"unexpected reply from autopackd: {type(reply).__name__}")
    if args.json:
        print(json.dumps({"text": reply.text, "bytes": reply.bytes, "degraded": reply.degraded},
                         ensure_ascii=False))
        return 0
    if reply.text:
        print(reply.text)
    print(f"({reply.bytes} bytes{', memory degraded' if reply.degraded else ''})")
    if reply.degraded:
        print("autopackctl: memory is degraded; a run would get no context now", file=sys.stderr)
    return 0


def cmd_lessons(args: argparse.Namespace) -> int:
    """``lessons``: 0 with the list (possibly empty); 2 when the daemon or memory cannot answer."""
    if args.limit < 1:
        return _fail("--limit must be at least 1")
    repo = os.path.realpath(args.repo) if args.repo else None
    try:
        reply = _request(args, GetLessons(repo=repo, search=args.search, limit=args.limit))
    except (DaemonUnavailable, RemoteError) as exc:
        return _fail(str(exc))
    if not isinstance(reply, Lessons):
        return _fail(f"unexpected reply from autopackd: {type(reply).__name__}")
    if args.json:
        print(json.dumps({"lessons": reply.lessons}, ensure_ascii=False))
        return 0
    if not reply.lessons:
        print("no lessons")
        return 0
    for lesson in reply.lessons:
        print(_format_lesson(lesson))
    return 0


def _format_lesson(lesson: dict[str, Any]) -> str:
    when = ""
    if isinstance(lesson.get("updated_at"), int | float):
        when = datetime.datetime.fromtimestamp(lesson["updated_at"]).strftime("%Y-%m-%d %H:%M")
    pattern = lesson.get("pattern") or "-"
    seen = lesson.get("seen", 1)
    head = f"#{lesson.get('id')} {pattern}  {lesson.get('repo', '')}  seen {seen}x  {when}".rstrip()
    return f"{head}\n  failure: {lesson.get('signature', '')}\n  fix:     {lesson.get('fix', '')}"

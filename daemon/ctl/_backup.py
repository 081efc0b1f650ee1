"""``autopackctl backup PATH``: an online backup of the daemon's database.

The daemon writes the copy (SQLite's online backup API, a consistent snapshot while it
keeps serving), so PATH is on the daemon's host and must be writable by its user. A
relative PATH is taken from the caller's working directory. Exit 0 with the copy's path
and size; 2 (one line) when the path exists, its directory is missing, or the copy fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from autopack.protocol import Backup

from ._client import Client, resolve_socket


def register(sub: Any) -> None:
    """Add the ``backup`` subcommand to ``sub`` (argparse subparsers)."""
    help_ = "write an online backup of the daemon's database to PATH"
    p = sub.add_parser("backup", help=help_, description=help_ + " (it must not exist).")
    p.add_argument("path", metavar="PATH", help="the copy to write (never overwritten)")
    p.add_argument("--json", action="store_true", help='print {"path", "bytes"}')
    p.set_defaults(func=cmd_backup)


def cmd_backup(args: argparse.Namespace) -> int:
    path = os.path.abspath(args.path)
    with Client(resolve_socket(getattr(args, "socket", None)), timeout=None) as client:
        reply = client.request(Backup(path=path))
    if args.json:
        sys.stdout.write(json.dumps({"path": reply.path, "bytes": reply.bytes}) + "\n")
    else:
        print(f"backup written to {reply.path} ({reply.bytes} bytes)")
    return 0

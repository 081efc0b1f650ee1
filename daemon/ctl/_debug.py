"""``autopackctl debug failpoint``: inject faults into the running daemon (docs/operations.md).

    autopackctl debug failpoint classifier.classify='every(3)*panic'   # arm
    autopackctl debug failpoint --list [--json]                        # what is armed
    autopackctl debug failpoint NAME=off | --clear                     # disarm one | all

Only the daemon's own user and root may use it. An unknown name or a malformed action is
one line on stderr, exit 2, and nothing is armed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from autopack.protocol import DebugFailpoint

from ._client import Client, resolve_socket
from ._errors import CtlError


def register(sub: Any) -> None:
    """Add ``debug`` (with its one subcommand, ``failpoint``) to ``sub``."""
    help_ = "fault injection for tests and operators: debug failpoint NAME=ACTION"
    p = sub.add_parser("debug", help=help_, description=help_)
    inner = p.add_subparsers(dest="debug_command", metavar="failpoint")
    f = inner.add_parser(
        "failpoint", help="arm, list or clear failpoints in the running daemon",
        description="Arm (NAME=[N*][every(K)*]ACTION, ACTION one of panic, error, "
                    "sleep(DURATION), off), list or clear failpoints in the running daemon. "
                    "Names: docs/operations.md#failpoints.")
    f.add_argument("terms", nargs="*", metavar="NAME=ACTION",
                   help="e.g. classifier.classify=3*panic 'memory.context_for=sleep(5s)'")
    f.add_argument("--list", action="store_true", help="print what is armed (the default)")
    f.add_argument("--clear", action="store_true", help="disarm every failpoint (first)")
    f.add_argument("--json", action="store_true", help='print {"armed": {...}, "fired": {...}}')
    f.set_defaults(func=cmd_failpoint)
    p.set_defaults(func=_need_sub)


def _need_sub(args: argparse.Namespace) -> int:
    raise CtlError("debug needs a subcommand: debug failpoint NAME=ACTION | --list | --clear")


def cmd_failpoint(args: argparse.Namespace) -> int:
    for term in args.terms:
        if "=" not in term:
            raise CtlError(f"expected NAME=ACTION, got {term!r}")
    req = DebugFailpoint(arm=";".join(args.terms), clear=args.clear)
    with Client(resolve_socket(getattr(args, "socket", None))) as client:
        reply = client.request(req)
    if args.json:
        sys.stdout.write(json.dumps({"armed": reply.armed, "fired": reply.fired}) + "\n")
    elif not reply.armed:
        print("no failpoint armed")
    else:
        for name, term in reply.armed.items():
            print(f"{name}={term}  (fired {reply.fired.get(name, 0)})")
    return 0

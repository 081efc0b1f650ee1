"""``autopackctl``'s entry point: global options, the command table, one-line errors.

Theory of operation: :data:`COMMANDS` maps each subcommand to the module of this
package that implements it. ``main`` picks the global options (``--socket``,
``--json``) out of any position, finds the subcommand, imports *only* its module
and builds *only* its argparse parser (``module.register(subparsers)``). So
``autopackctl status`` never loads the classifier's tables or the normalizer, and
``autopackctl --help`` loads neither argparse nor the protocol.

Exit status: 0 success, 1 the run or check asked about failed, 2 usage, connection or
validation error (one line on stderr, never a traceback), 3 ``wait --timeout`` ran out.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 3

# name -> (module in this package, one-line help). The module defines register(sub),
# which adds this name (and maybe its siblings in the same module) to `sub`.
COMMANDS: dict[str, tuple[str, str]] = {
    "submit": ("_runs", "submit run spec files (TOML or JSON); prints run ids"),
    "list": ("_runs", "list runs, newest first"),
    "status": ("_runs", "show a run and its phases"),
    "wait": ("_watch", "wait until runs end; exit 0 only if all succeeded"),
    "logs": ("_watch", "print a run's event log (-f to follow)"),
    "cancel": ("_runs", "cancel a queued or running run"),
    "report": ("_runs", "print a run's report (Markdown, or JSON with --json)"),
    "health": ("_runs", "is the daemon ready; which parts are degraded"),
    "retry": ("_runs", "start a new run continuing a failed one from a phase"),
    "diff": ("_runs", "show a run's change against its base"),
    "stats": ("_stats", "success rate, failures classified vs sent to the Doctor, tokens"),
    "context": ("_memory", "print the intention context memory would inject now"),
    "lessons": ("_memory", "list what memory learned (failure -> fix)"),
    "normalize": ("_normalize", "turn a Markdown/text plan into a run spec (no daemon needed)"),
    "classify": ("_classify", "classify a failure log (no daemon needed)"),
    "patterns": ("_classify", "list the failure patterns"),
    "backup": ("_backup", "write an online backup of the daemon's database to PATH"),
    "debug": ("_debug", "fault injection: debug failpoint NAME=ACTION | --list | --clear"),
    "detect": ("_detect", "what a run would install and check on a repository (no daemon)"),
    "completion": ("_completion", "print a shell completion script (bash, zsh, fish)"),
}

GLOBAL_HELP = (
    ("--socket PATH", "control socket (default: $AUTOPACK_SOCKET, then the daemon's default path)"),
    ("--json", "machine-readable output: one JSON document, or JSON Lines for streams"),
    ("-h, --help", "show this help (COMMAND --help: that command's options)"),
)


class Globals:
    """The options accepted in any position, picked out before the subcommand is parsed."""

    def __init__(self) -> None:
        self.socket: str | None = None
        self.json = False
        self.help = False
        self.command: str | None = None
        self.rest: list[str] = []


def split_globals(argv: list[str]) -> Globals:
    """Take ``--socket``/``--json`` from anywhere before ``--``, and the subcommand name.

    Raises :class:`CtlError` for ``--socket`` without a value or an unknown option
    given before the subcommand.
    """
    from ._errors import CtlError

    g = Globals()
    i = 0
    while i < len(argv):
        tok = argv[i]
        i += 1
        if tok == "--":
            g.rest += argv[i - 1:]
            break
        if tok == "--socket":
            if i >= len(argv):
                raise CtlError("--socket needs a value (a path)")
            g.socket, i = argv[i], i + 1
        elif tok.startswith("--socket="):
            g.socket = tok.split("=", 1)[1]
        elif tok == "--json":
            g.json = True
        elif g.command is None and tok in ("-h", "--help"):
            g.help = True
        elif g.command is None and tok.startswith("-") and tok != "-":
            raise CtlError(f"unknown option {tok}" + did_you_mean(
                tok.split("=", 1)[0], ["--socket", "--json", "--help"]) + "; see autopackctl --help")
        elif g.command is None:
            g.command = tok
        else:
            g.rest.append(tok)
    return g


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate (fewest edits, a swap of two
    neighbours counting as one; at most a third of the word), or ``""``."""
    best, best_d = "", max(1, len(word) // 3) + 1
    for cand in candidates:
        d = _edits(word.lower(), cand.lower())
        if d < best_d:
            best, best_d = cand, d
    return f" (did you mean {best!r}?)" if best else ""


def _edits(a: str, b: str) -> int:
    """Optimal string alignment distance (Levenshtein plus adjacent transpositions)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[len(b)]


def top_help() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: autopackctl [--socket PATH] [--json] COMMAND [ARGS...]", "",
             "Control autopackd: submit runs, follow them, read reports.", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "global options (accepted in any position):"]
    lines += [f"  {opt:<15} {text}" for opt, text in GLOBAL_HELP]
    lines += ["", "Run ids: any unique prefix of an id, or 'latest'.",
              "Exit status: 0 success, 1 the run or check asked about failed, 2 usage, "
              "connection or validation error, 3 wait --timeout ran out."]
    return "\n".join(lines)


def build_parser(command: str) -> Any:
    """The argparse parser of ``command`` alone (its module imported on demand)."""
    import argparse
    import importlib

    from ._argparse import CtlParser

    module = importlib.import_module(f"{__package__}.{COMMANDS[command][0]}")
    top = CtlParser(prog="autopackctl", add_help=False)
    sub = top.add_subparsers(dest="command", parser_class=CtlParser)
    module.register(sub)
    parser = sub.choices[command]
    assert isinstance(parser, argparse.ArgumentParser)
    return parser


def _dispatch(g: Globals) -> int:
    from ._errors import CtlError

    if g.command is None:
        if g.help:
            print(top_help())
            return EXIT_OK
        raise CtlError("no command given; see autopackctl --help")
    if g.command not in COMMANDS:
        raise CtlError(f"unknown command {g.command!r}" + did_you_mean(g.command, COMMANDS)
                       + "; see autopackctl --help")
    parser = build_parser(g.command)
    args = parser.parse_args(g.rest + (["--help"] if g.help else []))
    args.socket = g.socket
    args.json = bool(getattr(args, "json", False) or g.json)
    return int(args.func(args))


def main(argv: Iterable[str] | None = None) -> int:
    """Run ``autopackctl`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        return _dispatch(split_globals(argv))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (`autopackctl list | head`): quiet, like other CLIs
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 — every user error is one line, never a traceback
        return report(exc)


def report(exc: Exception) -> int:
    """Print ``exc`` as one line on stderr and return its exit status (re-raise bugs)."""
    from autopack.protocol import ProtocolError, RemoteError

    from ._errors import CtlError

    if isinstance(exc, RemoteError):
        details = "; ".join(exc.details)
        print(f"autopackctl: {exc.message}" + (f": {details}" if details else "")
              + f" [{exc.code}]", file=sys.stderr)
    elif isinstance(exc, CtlError):
        print(f"autopackctl: {exc}", file=sys.stderr)
    elif isinstance(exc, ProtocolError):  # a reply this client cannot read: one line too
        print(f"autopackctl: unreadable reply from autopackd: {exc} [{exc.code}]", file=sys.stderr)
    else:
        raise exc
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

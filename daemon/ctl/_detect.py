"""``autopackctl detect REPO``: what a run on REPO would install and check, and why.

No daemon needed: the pure toolchain detection runs in-process (file reads
only; no trio, no anthropic). Exit status: 0 when checks were found, 1 when
none were (a phase without ``checks`` would fail), 2 when REPO is not a
directory (one line on stderr).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import msgspec
from autopack.actors._toolchain import Detection, detect

__all__ = ["cmd_detect", "detection_json", "register"]


def register(sub: Any) -> None:
    """Add the ``detect`` subcommand to ``sub`` (an argparse subparsers object)."""
    p = sub.add_parser(
        "detect", help="show what a run would install and check on a repository (no daemon)",
        description="Detect a repository's toolchains and show what a run does when its spec "
                    "leaves it to detection: the install steps (run once per run, before the "
                    "first check, in the run's own environment), the checks a phase without "
                    "`checks` runs, and the reason for each choice. Exit 1 when no check is "
                    "found.")
    p.add_argument("repo", metavar="REPO", help="the repository (or any directory)")
    p.add_argument("--json", action="store_true",
                   help='print {"repo", "toolchains", "install", "checks", "env", '
                        '"install_inputs", "reasons"} as JSON')
    p.set_defaults(func=cmd_detect)


def detection_json(repo: Path, d: Detection) -> dict[str, Any]:
    """The stable ``--json`` object (add keys freely, rename none)."""
    out: dict[str, Any] = {"repo": str(repo)}
    out.update(msgspec.to_builtins(d))
    return out


def _print(repo: Path, d: Detection) -> None:
    print(f"repository: {repo}")
    if not d.toolchains:
        print("toolchains: none found")
    for tc in d.toolchains:
        runner = f", tests by {tc.runner}" if tc.runner else ", no test command"
        print(f"toolchain:  {tc.name} ({tc.manager}) in {tc.root}{runner}")
    if d.env == "venv":
        keyed = ", ".join(d.install_inputs) or "nothing"
        print(f"environment: a Python virtualenv per run, outside the worktree (install "
              f"inputs: {keyed})")
    print("install (once per run, before the first check; a spec's `setup` replaces it):")
    for cmd in d.install or ["(nothing)"]:
        print(f"  {cmd}")
    print("checks (for a phase without `checks`):")
    for cmd in d.checks or ["(none: such a phase would fail)"]:
        print(f"  {cmd}")
    print("why:")
    for tc in d.toolchains:
        for reason in tc.reasons:
            print(f"  - {reason}")
    for reason in d.reasons:
        print(f"  - {reason}")


def cmd_detect(args: Any) -> int:
    repo = Path(os.path.abspath(os.path.expanduser(args.repo)))
    if not repo.is_dir():
        print(f"autopackctl detect: {args.repo}: not a directory", file=sys.stderr)
        return 2
    d = detect(repo)
    if args.json:
        sys.stdout.write(json.dumps(detection_json(repo, d), ensure_ascii=False) + "\n")
    else:
        _print(repo, d)
    return 0 if d.checks else 1

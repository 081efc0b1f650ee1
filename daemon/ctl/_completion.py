"""``autopackctl completion bash|zsh|fish``: shell completion scripts.

Generated from the real parsers (every module in ``COMMANDS`` registers into one
parser), so a new subcommand or option completes without editing this file.
Completes commands, options, option choices (``--state``, ``--role``...), file
names where a command takes files, and ``latest`` where it takes a run id.

    bash:  source <(autopackctl completion bash)        (or save it under
           ~/.local/share/bash-completion/completions/autopackctl)
    zsh:   source <(autopackctl completion zsh)         (uses bashcompinit)
    fish:  autopackctl completion fish > ~/.config/fish/completions/autopackctl.fish
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from ._argparse import CtlParser
from ._main import COMMANDS, EXIT_OK, GLOBAL_HELP

SHELLS = ("bash", "zsh", "fish")
GLOBAL_OPTIONS = ["--socket", "--json", "--help"]
FILE_ARGS = {"spec", "file", "plan"}  # positional dests that name files


def register(sub: Any) -> None:
    """Add ``completion`` to ``sub`` (argparse subparsers)."""
    p = sub.add_parser("completion", help=COMMANDS["completion"][1],
                       description=__doc__.split("\n\n", 2)[2] if __doc__ else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash, zsh or fish")
    p.set_defaults(func=cmd_completion)


class Cmd:
    """What a shell needs to know about one subcommand."""

    def __init__(self, name: str, parser: argparse.ArgumentParser) -> None:
        self.name, self.help = name, COMMANDS[name][1]
        self.options: list[tuple[list[str], str, list[str] | None, bool]] = []
        self.files = self.runs = False
        self.positional_choices: list[str] = []
        for action in parser._actions:
            if action.option_strings:
                takes_value = action.nargs != 0
                choices = [str(c) for c in action.choices] if action.choices else None
                self.options.append((list(action.option_strings), action.help or "", choices,
                                     takes_value))
            elif action.dest in FILE_ARGS:
                self.files = True
            elif action.dest in ("run", "run_id"):
                self.runs = True
            elif action.choices:
                self.positional_choices = [str(c) for c in action.choices]


def commands() -> list[Cmd]:
    top = CtlParser(prog="autopackctl", add_help=False)
    sub = top.add_subparsers(dest="command", parser_class=CtlParser)
    for module in dict.fromkeys(m for m, _ in COMMANDS.values()):
        importlib.import_module(f"{__package__}.{module}").register(sub)
    return [Cmd(name, sub.choices[name]) for name in COMMANDS]


def cmd_completion(args: argparse.Namespace) -> int:
    cmds = commands()
    script = {"bash": bash, "zsh": zsh, "fish": fish}[args.shell](cmds)
    sys.stdout.write(script)
    return EXIT_OK


# ------------------------------------------------------------------ bash (and zsh)
def bash(cmds: list[Cmd]) -> str:
    names = " ".join(c.name for c in cmds)
    cases = []
    for c in cmds:
        opts = " ".join(s for strings, _, _, _ in c.options for s in strings)
        cases.append(f'        {c.name}) opts="{opts} --socket"; files={int(c.files)}; '
                     f'runs={int(c.runs)}; words="{" ".join(c.positional_choices)}";;')
    choice_cases = []
    for c in cmds:
        for strings, _, choices, _ in c.options:
            if choices:
                choice_cases.append(f'        {c.name}:{"|".join(strings)}) '
                                    f'COMPREPLY=($(compgen -W "{" ".join(choices)}" -- "$cur")); '
                                    "return;;")
    return f"""# autopackctl completion for bash: source <(autopackctl completion bash)
_autopackctl() {{
    local cur prev cmd="" i opts="" files=0 runs=0 words=""
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            --socket) ((i++));;
            -*) ;;
            *) cmd="${{COMP_WORDS[i]}}"; break;;
        esac
    done
    if [[ "$prev" == --socket ]]; then
        COMPREPLY=($(compgen -f -- "$cur")); return
    fi
    if [[ -z "$cmd" ]]; then
        COMPREPLY=($(compgen -W "{names} --socket --json --help" -- "$cur")); return
    fi
    case "$cmd:$prev" in
{chr(10).join(choice_cases)}
    esac
    case "$cmd" in
{chr(10).join(cases)}
        *) return;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts --json" -- "$cur"))
    elif [[ -n "$words" ]]; then
        COMPREPLY=($(compgen -W "$words" -- "$cur"))
    elif ((files)); then
        COMPREPLY=($(compgen -f -- "$cur"))
    elif ((runs)); then
        COMPREPLY=($(compgen -W "latest" -- "$cur"))
    fi
}}
complete -o default -F _autopackctl autopackctl
"""


def zsh(cmds: list[Cmd]) -> str:
    return ("# autopackctl completion for zsh: source <(autopackctl completion zsh)\n"
            "autoload -U +X compinit && compinit\n"
            "autoload -U +X bashcompinit && bashcompinit\n" + bash(cmds))


# ------------------------------------------------------------------ fish
def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish(cmds: list[Cmd]) -> str:
    names = " ".join(c.name for c in cmds)
    lines = ["# autopackctl completion for fish: autopackctl completion fish | source",
             "complete -c autopackctl -f"]
    for opt, text in GLOBAL_HELP:
        long = next(t for t in opt.replace(",", " ").split() if t.startswith("--"))[2:]
        flag = " -r -F" if "PATH" in opt else ""
        lines.append(f"complete -c autopackctl -l {long}{flag} -d {_fish_quote(text)}")
    for c in cmds:
        lines.append(f"complete -c autopackctl -n 'not __fish_seen_subcommand_from {names}' "
                     f"-a {c.name} -d {_fish_quote(c.help)}")
        cond = f"-n '__fish_seen_subcommand_from {c.name}'"
        for strings, text, choices, takes_value in c.options:
            spec = " ".join(f"-l {s[2:]}" if s.startswith("--") else f"-s {s[1:]}"
                            for s in strings)
            extra = f" -x -a {_fish_quote(' '.join(choices))}" if choices else (
                " -r" if takes_value else "")
            lines.append(f"complete -c autopackctl {cond} {spec}{extra} -d {_fish_quote(text)}")
        if c.files:
            lines.append(f"complete -c autopackctl {cond} -F")
        if c.runs:
            lines.append(f"complete -c autopackctl {cond} -a latest -d 'the newest run'")
        if c.positional_choices:
            lines.append(f"complete -c autopackctl {cond} -a "
                         f"{_fish_quote(' '.join(c.positional_choices))}")
    return "\n".join(lines) + "\n"

"""argparse, made to fail in one line: ``autopackctl CMD: problem (did you mean ...?)``."""

from __future__ import annotations

import argparse
import os
import re
from typing import NoReturn

from ._errors import CtlError

__all__ = ["CtlParser"]

_UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)")
_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


class CtlParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise :class:`CtlError` (one line, exit 2) with a
    did-you-mean for misspelled options and choices, instead of usage plus message."""

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse asks for a formatter on every add_argument; its default imports shutil
        # (and lzma, bz2) for the terminal width: os has it, and only help text needs it
        try:
            width = os.get_terminal_size(2).columns - 2
        except OSError:
            width = 78
        cls = self.formatter_class
        if isinstance(cls, type) and issubclass(cls, argparse.HelpFormatter):
            return cls(prog=self.prog, width=max(width, 40))
        return super()._get_formatter()

    def error(self, message: str) -> NoReturn:
        raise CtlError(f"{self.prog.removeprefix('autopackctl ')}: {message}{self._hint(message)}"
                       f"; see {self.prog} --help")

    def _hint(self, message: str) -> str:
        from ._main import did_you_mean

        m = _UNRECOGNIZED.match(message)
        if m:
            options = [s for a in self._actions for s in a.option_strings]
            options += ["--socket", "--json"]
            for word in m.group(1).split():
                if word.startswith("-"):
                    hint = did_you_mean(word.split("=", 1)[0], options)
                    if hint:
                        return hint
            return ""
        m = _INVALID_CHOICE.match(message.split(": ", 1)[-1]) or _INVALID_CHOICE.search(message)
        if m:
            choices = [c.strip().strip("'") for c in m.group(2).split(",")]
            return did_you_mean(m.group(1), choices)
        return ""

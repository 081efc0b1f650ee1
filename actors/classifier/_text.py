"""Line access over one failure output, for the rules' context checks.

A :class:`Scan` wraps the whole decoded output and hands out neighbouring lines
around a candidate without ever splitting the full text: a 10 MB log is only
ever walked by the prefilter, and rules look at a few lines around a hit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from autopack.protocol import ClassifyContext

from ._summary import _ANSI  # CSI (colours), OSC (titles, links), charset and keypad escapes


def clean_line(line: str) -> str:
    """Strip ANSI colour codes, carriage-return progress and trailing whitespace."""
    if "\x1b" in line:
        line = _ANSI.sub("", line)
    if "\r" in line:
        parts = [p for p in line.split("\r") if p.strip()]
        line = parts[-1] if parts else ""
    return line.rstrip()


@dataclass
class Scan:
    """The output being classified plus what is known about the command."""

    text: str
    exit_code: int | None
    ctx: ClassifyContext
    # Filled lazily: positions of pytest "Captured ..." section headers.
    _captured: list[tuple[int, int]] | None = field(default=None, repr=False)

    def lines_before(self, start: int, n: int) -> list[str]:
        """Up to ``n`` cleaned lines that end right before offset ``start`` (nearest last)."""
        out: list[str] = []
        end = start - 1  # the '\n' ending the previous line
        while len(out) < n and end > 0:
            s = self.text.rfind("\n", 0, end) + 1
            out.append(clean_line(self.text[s:end]))
            end = s - 1
        out.reverse()
        return out

    def lines_after(self, end: int, n: int) -> list[str]:
        """Up to ``n`` cleaned lines that start right after offset ``end`` (the line's end)."""
        out: list[str] = []
        pos = end + 1
        size = len(self.text)
        while len(out) < n and pos < size:
            e = self.text.find("\n", pos)
            if e < 0:
                e = size
            out.append(clean_line(self.text[pos:e]))
            pos = e + 1
        return out

    def in_captured_output(self, offset: int) -> bool:
        """True when ``offset`` lies in a pytest "Captured stdout/stderr/log" section.

        Those sections hold whatever the program under test printed; they are
        not the failure itself (the ``E`` lines are).
        """
        if self._captured is None:
            self._captured = []
            if "- Captured " in self.text:
                for m in _CAPTURED.finditer(self.text):
                    self._captured.append((m.start(), _section_end(self.text, m.end())))
        return any(s <= offset < e for s, e in self._captured)


_CAPTURED = re.compile(r"^-+ Captured (?:stdout|stderr|log) [\w ]+-+$", re.M)
_SECTION = re.compile(r"^(?:_{3,} .* _{3,}|={3,} .* ={3,}|-+ Captured .*-+)$", re.M)


def _section_end(text: str, pos: int) -> int:
    m = _SECTION.search(text, pos)
    return m.start() if m else len(text)


def iter_lines_reversed(text: str, limit: int) -> Iterator[str]:
    """The last ``limit`` non-empty cleaned lines of ``text``, last first."""
    end = len(text)
    count = 0
    while end > 0 and count < limit:
        s = text.rfind("\n", 0, end) + 1
        line = clean_line(text[s:end])
        if line:
            count += 1
            yield line
        end = s - 1

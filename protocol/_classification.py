"""What the failure classifier answers. Shared by the daemon, the CLI and the wire."""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

_VOLATILE = re.compile(
    r"\b\d+(?:\.\d+)?\s*(?:ms|s|sec|secs|seconds|m|min)\b"  # durations
    r"|\b0x[0-9a-fA-F]+\b"  # addresses
    r"|\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b"  # timestamps
    r"|\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b"
    r"|\bpid \d+\b", re.IGNORECASE)


def stable_signature(pattern: str | None, lines: list[str]) -> str:
    """``pattern|line|line…`` with volatile parts (durations, addresses, times) masked."""
    return f"{pattern}|" + "|".join(_VOLATILE.sub("#", line).strip() for line in lines)

MitigationKind = Literal["install_dependency", "wait", "hint", "none"]


class Mitigation(msgspec.Struct, frozen=True, kw_only=True):
    """What to do about a classified failure.

    ``kind`` says whether the daemon can *act* (``install_dependency``, ``wait``)
    or only *tell* the next Builder attempt (``hint``). Whether an action may run
    by itself is decided by the ``auto_mitigate`` setting, not here.
    """

    kind: MitigationKind
    summary: str  # one line for a person
    hint: str = ""  # text for the next Builder attempt
    package: str | None = None  # distribution / npm package to install
    manager: str | None = None  # pip, uv, npm, yarn, pnpm
    wait_s: float | None = None  # for rate limits: seconds to wait (retry-after)


class Classification(msgspec.Struct, frozen=True, kw_only=True):
    """The classifier's verdict. ``pattern`` is ``None`` when nothing deterministic fits."""

    pattern: str | None
    evidence: list[str] = []  # the line(s) that decided it
    details: dict[str, Any] = {}  # module, file, line, port, retry_after, tests, ...
    mitigation: Mitigation | None = None

    @property
    def signature(self) -> str:
        """Pattern plus evidence: equal signatures across attempts mean 'stuck'.

        Durations, addresses and timestamps are masked: the same failure twice is
        the same failure however long the test run took."""
        return stable_signature(self.pattern, self.evidence)


class ClassifyContext(msgspec.Struct, frozen=True, kw_only=True):
    """What the classifier may know besides the output itself."""

    command: str | None = None
    toolchain: str | None = None  # python, node, rust, go, java, make
    repo_root: str | None = None
    repo_modules: list[str] = []  # top-level module/package names that belong to the repo
    lockfile_manager: str | None = None  # npm, yarn, pnpm for node installs

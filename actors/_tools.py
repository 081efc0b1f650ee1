"""Executors of Anthropic's client-side tools, confined to one worktree.

The Builder offers the model two tools it was trained on, and we execute them:

- ``text_editor_20250728`` (name ``str_replace_based_edit_tool``): ``view``
  (a file with line numbers, optionally a ``view_range``; a directory listing
  two levels deep), ``create``, ``str_replace`` (``old_str`` must match exactly
  once) and ``insert`` (after ``insert_line``; 0 = at the top).
- ``bash_20250124`` (name ``bash``): a command run by ``bash -c`` in the
  phase's working directory inside the run's sandbox (:mod:`._sandbox`: only
  the worktree, the run's environment and a private ``/tmp`` writable, no
  network unless the run allows it, its own PID namespace, so nothing it
  starts outlives it), in its own process group (killed on timeout and when
  the command ends), stdin from ``/dev/null``, stdout+stderr captured with
  a size bound (head and tail kept), in the environment the caller gives (the
  run's venv on ``PATH``). Each command starts a fresh shell; ``restart`` is
  accepted and answers that the tool restarted.

Confinement: every editor path is resolved (symlinks followed, ``..``
collapsed) and must stay inside the worktree and outside its ``.git``; if not,
the model gets an error ``tool_result`` (``is_error``) and nothing is touched.
Relative paths are relative to the phase's working directory — the worktree
root, or the spec's ``workdir`` inside it —, the directory the bash tool's
commands start in, so ``ls`` and ``view`` agree; absolute paths are accepted
only when they point inside the worktree. Commands are confined by the OS (the sandbox),
not by inspecting their text.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import msgspec

from ._errors import PathRefused as PathRefused
from ._proc import CommandResult as CommandResult
from ._proc import run_command as run_command
from ._sandbox import RunBox, SandboxUnavailable

LOGGER = logging.getLogger(__name__)

EDITOR_NAME = "str_replace_based_edit_tool"
BASH_NAME = "bash"
EDITOR_TOOL: dict[str, Any] = {"type": "text_editor_20250728", "name": EDITOR_NAME}
BASH_TOOL: dict[str, Any] = {"type": "bash_20250124", "name": BASH_NAME}
#: The tool definitions the Builder sends (the last one carries the cache breakpoint).
BUILDER_TOOLS: list[dict[str, Any]] = [EDITOR_TOOL, BASH_TOOL]

DEFAULT_MAX_OUTPUT = 30_000  # characters of command output / file view returned to the model



class ToolResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a tool call returns to the model."""

    content: str
    is_error: bool = False

    def to_block(self, tool_use_id: str) -> dict[str, Any]:
        """The ``tool_result`` content block for the next user message."""
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id,
                                 "content": self.content or "(no output)"}
        if self.is_error:
            block["is_error"] = True
        return block


def confine(worktree: Path, path: str, cwd: Path | None = None) -> Path:
    """Resolve ``path`` (relative to ``cwd``, default ``worktree``, or absolute) and return
    it if it stays inside ``worktree``.

    Raises :class:`PathRefused` otherwise (the message is safe to show the model).
    """
    if not isinstance(path, str) or not path.strip():
        raise PathRefused("a non-empty 'path' is required")
    if "\x00" in path:
        raise PathRefused("path contains a NUL byte")
    root = worktree.resolve()
    raw = Path(path)
    candidate = raw if raw.is_absolute() else (cwd.resolve() if cwd else root) / raw
    resolved = Path(os.path.realpath(candidate))
    if resolved != root and not resolved.is_relative_to(root):
        raise PathRefused(f"refused: {path} is outside the worktree (it resolves outside it); "
                          "only paths inside the repository may be used")
    rel = resolved.relative_to(root)
    if rel.parts and rel.parts[0] == ".git":
        raise PathRefused(f"refused: {path} is inside .git, which is off limits")
    return resolved


def _bound(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    half = limit // 2
    dropped = len(text) - 2 * half
    return f"{text[:half]}\n[... {dropped} characters omitted ...]\n{text[-half:]}", True


class Tools:
    """The Builder's tool executor for one worktree and environment.

    ``await tools.run(name, input)`` returns a :class:`ToolResult`; it never
    raises for a bad tool call (the model gets an error result instead).
    ``refused`` counts confinement refusals.
    """

    def __init__(self, worktree: Path, env: Mapping[str, str], *, command_timeout_s: float = 300.0,
                 max_output: int = DEFAULT_MAX_OUTPUT, box: RunBox | None = None,
                 cwd: Path | None = None) -> None:
        self.worktree = worktree.resolve()
        self.box = box  # the run's sandbox; None only outside a daemon run (tests of the editor)
        self.cwd = cwd.resolve() if cwd is not None else self.worktree
        self.env = dict(env)
        self.command_timeout_s = command_timeout_s
        self.max_output = max_output
        self.refused = 0
        self.calls = 0

    async def run(self, name: str, tool_input: Any) -> ToolResult:
        """Execute one ``tool_use`` block's ``name`` and ``input``."""
        self.calls += 1
        if not isinstance(tool_input, dict):
            return ToolResult(content="tool input must be an object", is_error=True)
        try:
            if name == EDITOR_NAME:
                return await anyio.to_thread.run_sync(self._edit, tool_input)
            if name == BASH_NAME:
                return await self._bash(tool_input)
        except PathRefused as exc:
            self.refused += 1
            LOGGER.info("tool %s refused in %s: %s", name, self.worktree, exc)
            return ToolResult(content=str(exc), is_error=True)
        return ToolResult(content=f"unknown tool {name!r}", is_error=True)

    # -- bash ------------------------------------------------------------------------
    async def _bash(self, tool_input: dict[str, Any]) -> ToolResult:
        if tool_input.get("restart"):
            return ToolResult(content="tool has been restarted.")
        command = tool_input.get("command")
        if not isinstance(command, str) or not command.strip():
            return ToolResult(content="a non-empty 'command' is required", is_error=True)
        try:
            result = await run_command(command, cwd=self.cwd, env=self.env, box=self.box,
                                       timeout_s=self.command_timeout_s,
                                       max_output=self.max_output)
        except SandboxUnavailable as exc:
            return ToolResult(content=f"refused: no sandbox to run commands in ({exc})",
                              is_error=True)
        if result.timed_out:  # the output ends with the timeout record
            return ToolResult(content=result.output, is_error=True)
        text = result.output
        if result.exit_code:
            text = f"{text}\n[exit status {result.exit_code}]"
        return ToolResult(content=text)

    # -- text editor -----------------------------------------------------------------
    def _edit(self, tool_input: dict[str, Any]) -> ToolResult:
        command = tool_input.get("command")
        path_text = tool_input.get("path", "")
        path = confine(self.worktree, path_text, self.cwd)
        shown = os.path.relpath(path, self.cwd)  # as the bash tool would name it
        handler = {"view": self._view, "create": self._create, "str_replace": self._str_replace,
                   "insert": self._insert}.get(str(command))
        if handler is None:
            return ToolResult(content=f"unsupported command {command!r}; use view, create, "
                                      "str_replace or insert", is_error=True)
        try:
            return handler(path, shown, tool_input)
        except (OSError, UnicodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            return ToolResult(content=f"{command} {shown}: {reason}", is_error=True)

    def _view(self, path: Path, shown: str, tool_input: dict[str, Any]) -> ToolResult:
        if path.is_dir():
            return ToolResult(content=self._listing(path, shown))
        if not path.exists():
            return ToolResult(content=f"{shown} does not exist", is_error=True)
        lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
        start, end = 1, len(lines)
        view_range = tool_input.get("view_range")
        if view_range is not None:
            if (not isinstance(view_range, list) or len(view_range) != 2
                    or not all(isinstance(v, int) for v in view_range)):
                return ToolResult(content="view_range must be [start, end]", is_error=True)
            start, end = view_range
            if end == -1:
                end = len(lines)
            if not 1 <= start <= len(lines) or end < start:
                return ToolResult(content=f"invalid view_range {view_range}: the file has "
                                          f"{len(lines)} lines", is_error=True)
            end = min(end, len(lines))
        numbered = "\n".join(f"{i:6}\t{lines[i - 1]}" for i in range(start, end + 1))
        text, _ = _bound(numbered, self.max_output)
        return ToolResult(content=text)

    def _listing(self, path: Path, shown: str) -> str:
        entries: list[str] = []
        for current, dirs, files in os.walk(path):
            rel = Path(current).relative_to(path)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in dirs + sorted(f for f in files if not f.startswith(".")):
                entries.append(str(Path(shown) / rel / name))
            if rel.parts:  # two levels listed: do not descend further
                dirs[:] = []
        text, _ = _bound("\n".join(entries), self.max_output)
        return (f"Files and directories up to 2 levels deep in {shown}, excluding hidden items:\n"
                f"{text}")

    def _create(self, path: Path, shown: str, tool_input: dict[str, Any]) -> ToolResult:
        file_text = tool_input.get("file_text")
        if not isinstance(file_text, str):
            return ToolResult(content="create needs 'file_text'", is_error=True)
        if path.is_dir():
            return ToolResult(content=f"{shown} is a directory", is_error=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(file_text, encoding="utf-8")
        return ToolResult(content=f"File created successfully at: {shown}")

    def _read_file(self, path: Path, shown: str) -> str:
        if not path.is_file():
            raise FileNotFoundError(2, f"{shown} is not an existing file")
        return path.read_text(encoding="utf-8")

    def _str_replace(self, path: Path, shown: str, tool_input: dict[str, Any]) -> ToolResult:
        old, new = tool_input.get("old_str"), tool_input.get("new_str", "")
        if not isinstance(old, str) or not old or not isinstance(new, str):
            return ToolResult(content="str_replace needs a non-empty 'old_str' (and a string "
                                      "'new_str')", is_error=True)
        text = self._read_file(path, shown)
        count = text.count(old)
        if count == 0:
            return ToolResult(content=f"No replacement was performed: old_str did not appear "
                                      f"verbatim in {shown}.", is_error=True)
        if count > 1:
            lines = [text[:i].count("\n") + 1 for i in _find_all(text, old)]
            return ToolResult(content=f"No replacement was performed: old_str appears {count} "
                                      f"times in {shown} (lines {lines}); make it unique.",
                              is_error=True)
        at = text.index(old)
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
        line = text[:at].count("\n") + 1
        return ToolResult(content=f"The file {shown} has been edited (at line {line}).")

    def _insert(self, path: Path, shown: str, tool_input: dict[str, Any]) -> ToolResult:
        line = tool_input.get("insert_line")
        new = tool_input.get("insert_text", tool_input.get("new_str"))
        if not isinstance(line, int) or isinstance(line, bool) or not isinstance(new, str):
            return ToolResult(content="insert needs an integer 'insert_line' and 'insert_text'",
                              is_error=True)
        text = self._read_file(path, shown)
        lines = text.split("\n")
        if not 0 <= line <= len(lines):
            return ToolResult(content=f"insert_line {line} is out of range 0..{len(lines)}",
                              is_error=True)
        new_lines = new.split("\n")
        path.write_text("\n".join(lines[:line] + new_lines + lines[line:]), encoding="utf-8")
        return ToolResult(content=f"The file {shown} has been edited: {len(new_lines)} line(s) "
                                  f"inserted after line {line}.")


def _find_all(text: str, needle: str) -> list[int]:
    found, start = [], 0
    while (i := text.find(needle, start)) != -1:
        found.append(i)
        start = i + 1
    return found

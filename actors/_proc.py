"""Run one shell command the way checks, fix commands and the Builder's bash tool need it.

Each command gets its own session (so its own process group), a time limit,
and captured output with a size bound (head and tail are kept, the middle is
dropped with a marker). However the wait ends — exit, timeout, cancellation —
the whole process group is killed before we return, so nothing outlives its
phase.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import msgspec
from anyio.abc import Process

from .classifier._core import timeout_record

if TYPE_CHECKING:
    from ._sandbox import RunBox, StepKind

TIMEOUT_EXIT = 124  # what coreutils' timeout(1) uses; the classifier knows it


class CommandResult(msgspec.Struct, frozen=True, kw_only=True):
    command: str
    exit_code: int
    duration_s: float
    output: str
    output_bytes: int  # total produced, before the bound
    truncated: bool = False
    timed_out: bool = False
    output_limited: bool = False  # stopped for printing more than the output limit
    no_tests: bool = False  # exited 0 but its test runner reported that zero tests ran

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.no_tests


class _Bounded:
    """Keeps the first and last ``limit // 2`` bytes of a stream."""

    def __init__(self, limit: int) -> None:
        self.head_limit = max(limit // 2, 1)
        self.tail_limit = max(limit - self.head_limit, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > 2 * self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    def text(self) -> tuple[str, bool]:
        tail = self.tail[-self.tail_limit:]
        dropped = self.total - len(self.head) - len(tail)
        if dropped > 0:
            body = bytes(self.head) + f"\n[… {dropped} bytes of output omitted …]\n".encode() + bytes(tail)
        else:
            body = bytes(self.head) + bytes(tail)
        return body.decode("utf-8", "replace"), dropped > 0


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a whole process group; ``False`` if it no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def _exit_code(returncode: int | None) -> int:
    if returncode is None:
        return -1
    return 128 - returncode if returncode < 0 else returncode


async def _collect(proc: Process, pgid: int, buf: _Bounded, limit: int | None) -> bool:
    """Read output until the command exits; then end what it left in the background
    (a check must not leave daemons behind, and they would hold the pipe open).
    Returns ``True`` when the command was stopped for exceeding ``limit`` bytes."""
    drained = anyio.Event()
    over = False

    async def reader() -> None:
        assert proc.stdout is not None
        nonlocal over
        try:
            async for chunk in proc.stdout:
                buf.feed(chunk)
                if limit is not None and buf.total > limit:
                    over = True
                    kill_group(pgid, signal.SIGKILL)
                    break
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        drained.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await proc.wait()
        with anyio.move_on_after(0.5):
            await drained.wait()
        kill_group(pgid, signal.SIGKILL)
        tg.cancel_scope.cancel()
    return over


async def run_command(
    command: str,
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 900,
    max_output: int = 1_000_000,
    output_limit: int | None = None,
    on_start: Callable[[int], Awaitable[None]] | None = None,
    on_end: Callable[[int], Awaitable[None]] | None = None,
    box: RunBox | None = None,
    step: StepKind = "command",
) -> CommandResult:
    """Run ``command`` with ``bash -c`` in ``cwd``; return its result (never raises for a
    failing command). ``on_start(pgid)`` / ``on_end(pgid)`` let the caller record the
    process group durably so a restarted daemon can kill leftovers.

    With ``box`` (a run's :class:`~._sandbox.RunBox`) the command runs inside the
    run's sandbox; ``step`` says whether it is an install-like step (the network
    may be allowed) or a plain command. Every command a run executes passes a
    box; ``box=None`` is for the daemon's own tools only. Raises
    :class:`~._sandbox.SandboxUnavailable` when the box has no working sandbox.

    Cancellation kills the process group and propagates.
    """
    started = time.monotonic()
    buf = _Bounded(max_output)
    argv: list[str] = ["bash", "-c", command]
    pass_fds: tuple[int, ...] = ()
    env_dict = dict(env) if env is not None else None
    if box is not None:
        launch = box.launch(command, cwd=cwd, env=env if env is not None else os.environ,
                            step=step)
        argv, env_dict, pass_fds = launch.argv, launch.env, launch.pass_fds
    proc: Process = await anyio.open_process(
        argv, cwd=str(cwd), env=env_dict, pass_fds=pass_fds,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    pgid = proc.pid
    timed_out = False
    over = False
    try:
        if on_start is not None:
            await on_start(pgid)
        with anyio.move_on_after(timeout_s if timeout_s and timeout_s > 0 else math.inf) as scope:
            over = await _collect(proc, pgid, buf, output_limit)
        if scope.cancelled_caught:
            timed_out = True
            kill_group(pgid, signal.SIGTERM)
            with anyio.move_on_after(2):
                await proc.wait()
    finally:
        with anyio.CancelScope(shield=True):
            # grandchildren may still hold the pipe or run in the background: end them all
            kill_group(pgid, signal.SIGKILL)
            with anyio.move_on_after(5):
                await proc.wait()
            await proc.aclose()
            if on_end is not None:
                await on_end(pgid)
    # decoding up to max_output bytes takes a while: off the event loop when it is large
    output, truncated = (await anyio.to_thread.run_sync(buf.text) if buf.total > 1 << 20
                         else buf.text())
    if timed_out:
        output += "\n" + timeout_record(timeout_s) + "\n"  # decisive evidence for the classifier
    if over:
        output += f"\n[autopack: command stopped: it printed more than {output_limit} bytes]\n"
    return CommandResult(
        command=command,
        exit_code=TIMEOUT_EXIT if timed_out else _exit_code(proc.returncode),
        duration_s=round(time.monotonic() - started, 4),
        output=output,
        output_bytes=buf.total,
        truncated=truncated,
        timed_out=timed_out,
        output_limited=over,
    )

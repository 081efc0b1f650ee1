"""Exceptions of the actors: every class ``autopack.actors`` raises on purpose.

Hierarchy::

    AutopackError (autopack.protocol)     errors autopack raises on purpose
    ├── ExternalError                     a part outside autopack failed: the step fails
    │   │                                 (or degrades) with this message, the daemon lives
    │   ├── GitError                      git exited non-zero
    │   ├── SandboxUnavailable            no working sandbox for a run's commands
    │   └── LLMError                      the model API (LLM client, Builder, Doctor)
    │       ├── LLMAuthError              no key, or the key is refused (401/403)
    │       ├── BudgetExhausted           a call would not fit a token/cost budget
    │       ├── LLMUnavailable            429/5xx/529/connection errors, retries spent
    │       ├── LLMRequestError           the API refused the request itself (400)
    │       └── DoctorMalformed           the Doctor's answer fits no decision
    ├── InputError                        garbage in: refused with one line, nothing done
    │   ├── PlanError                     a plan that cannot become a run spec
    │   ├── PriceError (also ValueError)  a price override that is not four numbers
    │   └── PathRefused                   a Builder tool's path leaves the worktree
    └── RunLocked                         another live process executes the run

    Exception
    ├── InvalidTransition                 a bug in autopack: a state change the table
    │                                     forbids (deliberately no AutopackError)
    ├── EngineError                       a bug: an event the run engine cannot place
    └── ReplayDivergence                  a bug or a damaged log: replaying a run's events
                                          does not reproduce what was recorded

A "bug in autopack" is any exception outside ``AutopackError``: a run that meets one
fails with ``internal error: …`` and the log holds the traceback. The run engine's own
control flow (``Drained``, ``PhaseEnded``, ``RunEnded``) is not an error and lives
with the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopack.protocol import AutopackError

if TYPE_CHECKING:
    from ._budget import Refuse
    from ._llm import CallUsage

__all__ = [
    "BudgetExhausted", "DoctorMalformed", "ExternalError", "GitError", "InputError",
    "EngineError", "InvalidTransition", "LLMAuthError", "LLMError", "LLMRequestError", "LLMUnavailable",
    "PathRefused", "PlanError", "PriceError", "ReplayDivergence",
    "RunLocked", "SandboxUnavailable",
]


# ------------------------------------------------------------------------ bases
class ExternalError(AutopackError):
    """Base of the failures of parts outside autopack (git, the sandbox, the model API,
    memory's SQLite thread). Not raised itself."""


class InputError(AutopackError):
    """Base of the refusals of garbage input (a plan, a price override, a path named by the
    model). Not raised itself."""


# ------------------------------------------------------------------------ external
class GitError(ExternalError):
    """Raised by every function of :mod:`autopack.actors._git` (worktrees, drift check,
    pool, diffs) when git exits non-zero. ``command`` is git's arguments (without the
    hardening options), ``returncode`` its exit status, ``stderr`` the last non-empty line
    it wrote (``fatal: …``). A run that meets one ends failed with this message."""

    def __init__(self, command: tuple[str, ...] | list[str], returncode: int,
                 stderr: bytes | str = b"") -> None:
        self.command = tuple(command)
        self.returncode = returncode
        text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        self.stderr = lines[-1][:500] if lines else ""
        shown = " ".join(self.command)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"git {shown} failed (exit {returncode})"
                         + (f": {self.stderr}" if self.stderr else ""))


class SandboxUnavailable(ExternalError):
    """Raised by :meth:`RunBox.launch` (``actors._sandbox``) when no working sandbox exists
    (and it is not off)."""


class LLMError(ExternalError):
    """Base of the errors raised on purpose by the LLM client, the Builder and the Doctor."""


class LLMAuthError(LLMError):
    """Raised by :meth:`LLM.create` when no key is configured or the API rejects it (401/403)."""


class BudgetExhausted(LLMError):
    """Raised by :meth:`LLM.create` before a call whose worst case does not fit a budget
    (the call is not made).

    ``reason`` is ``"token_budget"`` or ``"usd_budget"``; ``refusal`` holds the
    figures (scope, unit, limit, spent, needed).
    """

    def __init__(self, reason: str, message: str, refusal: Refuse | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.refusal = refusal

    @classmethod
    def from_refusal(cls, refusal: Refuse) -> BudgetExhausted:
        return cls(refusal.reason, refusal.message(), refusal)


class LLMUnavailable(LLMError):
    """Raised by :meth:`LLM.create` when every attempt failed with 429/5xx/529/connection errors."""


class LLMRequestError(LLMError):
    """Raised by :meth:`LLM.create` when the API refuses the request itself (e.g. 400); not retried."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class DoctorMalformed(LLMError):
    """Raised by ``ask_doctor`` when the answer does not fit the decision schema.

    ``usage`` holds the call's accounting so the caller can still record the tokens.
    """

    def __init__(self, message: str, usage: CallUsage | None = None) -> None:
        super().__init__(message)
        self.usage = usage


# ------------------------------------------------------------------------ input
class PlanError(InputError):
    """Raised by :func:`normalize_plan` / :func:`normalize_file` for a plan that cannot
    become a run spec (empty, binary, too large, unreadable, nothing actionable, or a
    target repository that is not a git repository). ``message`` is one line for people."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class PriceError(InputError, ValueError):
    """Raised by :func:`price_table` (``actors._budget``) for an override that is not four
    non-negative numbers."""


class PathRefused(InputError):
    """Raised by :func:`confine` (``actors._tools``) for a path that leaves the worktree or
    enters ``.git``; the Builder's tool call gets it as its error result."""


# ------------------------------------------------------------------------ other
class RunLocked(AutopackError):
    """Raised by :func:`acquire_run_lock` (``actors._worktree``) when another live process
    holds the run; the message names the holder (pid@host)."""


class InvalidTransition(Exception):
    """Raised by the state tables (``actors._states``) when code asks for a state change
    the table does not allow: a bug in autopack."""

    def __init__(self, what: str, current: str, target: str) -> None:
        self.what, self.current, self.target = what, current, target
        super().__init__(f"{what}: no transition {str(current)!r} -> {str(target)!r}")


class EngineError(Exception):
    """Raised by the run engine (``actors._engine.step``) for an event that names no phase
    of the run or comes where none can: a bug in the shell feeding it, or a damaged log."""


class ReplayDivergence(Exception):
    """Raised by ``actors._engine.replay`` when a recorded decision or state change is not
    what the engine makes of the events before it; the message names the row."""

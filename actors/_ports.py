"""Typed ports between the actors and the daemon that composes them.

Imports run one way (``daemon`` composes ``actors``), so the actors cannot name
the daemon's classes: they name these :class:`~typing.Protocol`\\ s instead, and
the daemon passes objects that satisfy them (checked by mypy, not at run
time). A second implementation — a PostgreSQL store, a test double at the seam
— only has to satisfy the port.

=================  =============================================  ==============================
port               what the actors need                           provided by
=================  =============================================  ==============================
RecordsPort        durable run/phase/event records                ``daemon._records.Records``
SettingsPort       the settings a run reads (a frozen snapshot)   ``daemon._config.Settings``
PoolPort           ready worktrees                                ``_pool.WorktreePool``
SandboxPort        the confinement of a run's commands            ``_sandbox.Sandbox``
Classify           failure text → classification                  the daemon (classifier actor)
MitigatePort       carry out a classification's safe action       ``classifier.apply_mitigation``
MemoryPort         bounded intention context, outcomes, lessons   ``_memory.MemoryClient``
LLMPort            one Messages API call with budgets             ``_llm.LLM``
=================  =============================================  ==============================

Settings are read from a snapshot (``RunServices.settings``) that a reload
replaces whole: take it once per decision (``s = services.settings``) and read
every value of that decision from ``s``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import anyio
    from anthropic.types import Message
    from autopack.protocol import Classification, ClassifyContext, RunSpec

    from ._budget import Budget
    from ._llm import CallUsage
    from ._memory import ContextResult
    from ._sandbox import Probe, RunBox, SandboxMode
    from .classifier._actions import ActionResult

__all__ = ["Classify", "LLMPort", "MemoryPort", "MitigatePort", "PoolPort", "RecordsPort",
           "SandboxPort", "SettingsPort"]


class RecordsPort(Protocol):
    """What the run actor and the scheduler need from the store: every write is durable
    when the call returns."""

    async def run(self, run_id: str) -> dict[str, Any]: ...
    async def runs_in(self, *states: str) -> list[str]: ...
    async def set_run_state(self, run_id: str, target: str, reason: str | None = None,
                            **payload: Any) -> str: ...
    async def set_run_fields(self, run_id: str, **fields: Any) -> None: ...
    async def set_phase_state(self, run_id: str, idx: int, target: str, *,
                              reason: str | None = None, commit: str | None = None,
                              **payload: Any) -> None: ...
    async def begin_attempt(self, run_id: str, idx: int, **payload: Any) -> int: ...
    async def event(self, run_id: str, phase_id: str | None, attempt: int | None, kind: str,
                    **payload: Any) -> None: ...
    async def add_doctor_call(self, run_id: str, idx: int) -> int: ...
    async def record_llm_call(self, run_id: str, phase_id: str | None, attempt: int | None,
                              role: str, model: str, usage: dict[str, int],
                              cost_pusd: int | None = None) -> dict[str, int]: ...
    async def spend(self, run_id: str, phase_id: str) -> dict[str, int]: ...
    async def mean_doctor_tokens(self) -> float | None: ...
    async def add_process(self, pgid: int, run_id: str, command: str) -> None: ...
    async def remove_process(self, pgid: int) -> None: ...
    async def all_events(self, run_id: str) -> list[dict[str, Any]]: ...


class SettingsPort(Protocol):
    """The settings a run reads, all read-only (``daemon._config.Settings`` is frozen).
    The live-reloadable ones among them change between snapshots, never within one."""

    @property
    def auto_mitigate(self) -> list[str]: ...
    @property
    def enable_failure_hardening(self) -> bool: ...
    @property
    def enable_intention_context(self) -> bool: ...
    @property
    def default_doctor_tokens(self) -> int: ...
    @property
    def drift_policy(self) -> str: ...
    @property
    def builder_max_turns(self) -> int: ...
    @property
    def builder_attempt_wall_s(self) -> float: ...
    @property
    def builder_attempt_tokens(self) -> int | None: ...
    @property
    def builder_context_editing(self) -> str: ...
    @property
    def min_free_disk_mb(self) -> int: ...
    @property
    def prices(self) -> dict[str, list[float]]: ...


class PoolPort(Protocol):
    """Ready worktrees per repository, so a run starts without a checkout."""

    async def take(self, repo: Path, base_sha: str, dest: Path, branch: str,
                   lock: anyio.Lock) -> bool: ...
    async def refill(self, repo: Path, base_sha: str, lock: anyio.Lock) -> None: ...
    async def recycle(self, repo: Path, worktree: Path, base_sha: str,
                      lock: anyio.Lock) -> bool: ...
    def wants(self, repo: Path) -> bool: ...
    def released(self, repo: Path) -> None: ...


class SandboxPort(Protocol):
    """The daemon's sandbox: how it was probed, and one confinement per run."""

    @property
    def probe(self) -> Probe: ...
    @property
    def mode(self) -> SandboxMode: ...
    def box(self, *, worktree: Path, scratch: Path, writable: Sequence[Path] = (),
            readonly: Sequence[Path] = (), install_writable: Sequence[Path] = (),
            network: str | None = None) -> RunBox: ...


# the classifier actor, asked through the daemon (unclassified when it does not answer)
Classify = Callable[[str, "int | None", "ClassifyContext"], Awaitable["Classification"]]


class MitigatePort(Protocol):
    """Carry out ``c``'s mitigation if allowed and not done yet; never raises for a
    failed action (the result says so)."""

    async def __call__(self, c: Classification, *, worktree: Path, python: Path | None,
                       env: Mapping[str, str], allowed: set[str], already: set[str],
                       timeout_s: float = ..., max_wait_s: float = ...,
                       box: Any = None) -> ActionResult: ...


class MemoryPort(Protocol):
    """The memory actor as callers see it: answers within its deadline or degrades."""

    @property
    def enabled(self) -> bool: ...
    async def context_for(self, run_id: str, phase_id: str | None, role: str,
                          failure: Classification | None = None) -> ContextResult: ...
    async def record_intention(self, run_id: str, repo: str, spec: RunSpec) -> bool: ...
    async def record_outcome(self, run_id: str, phase_id: str, attempt: int, *, tried: str,
                             pattern: str | None, evidence: str, worked: bool,
                             fix: str | None = None) -> bool: ...
    async def record_lesson(self, repo: str, signature: str, fix: str,
                            pattern: str | None = None) -> bool: ...


class LLMPort(Protocol):
    """The shared Claude client: budgets, rate limits and retries inside."""

    @property
    def has_key(self) -> bool: ...
    async def create(self, *, system: str | list[dict[str, Any]], messages: list[dict[str, Any]],
                     tools: Sequence[Mapping[str, Any]] = (), max_tokens: int | None = None,
                     role: str, run_id: str | None = None, budget: Budget | None = None,
                     tool_choice: Mapping[str, Any] | None = None,
                     cache_messages: bool = False,
                     extra: Mapping[str, Any] | None = None) -> tuple[Message, CallUsage]: ...

"""The Doctor: one LLM call that decides what to do about a failure nothing deterministic knows.

``ask_doctor`` sends the failure excerpt, the classifier's verdict and at most
512 bytes of intention context, and forces the answer through the
``doctor_decision`` tool (``tool_choice``), whose JSON schema allows four
actions: ``retry_with_hint`` (with ``hint``), ``run_fix`` (with one
``command``, run once by :func:`run_fix` in the worktree, then the checks
again), ``skip_phase`` and ``abort_run``, each with a short ``rationale``.
An answer that does not fit raises :class:`DoctorMalformed` (carrying the
call's usage); the caller counts it as a failed Doctor call.

Also here: :func:`normalize_with_llm`, the same forced-tool technique for
turning a free-form plan into a run spec (``autopackctl normalize --llm``).

Scripted-model note: the Doctor's first user message starts with
``Diagnose the failure of phase <id> (attempt <n>)``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
from autopack.protocol import Classification, PhaseSpec, SpecError, run_spec_json_schema
from autopack.protocol import validate_spec as _validate_spec

from ._budget import Budget
from ._builder import clip_utf8
from ._llm import (
    LLM,
    NORMALIZE_TOOL_NAME,
    CallUsage,
    DoctorMalformed,
    LLMError,
    normalize_request,
    tool_uses,
)
from ._tools import CommandResult, run_command

LOGGER = logging.getLogger(__name__)

DoctorAction = Literal["retry_with_hint", "run_fix", "skip_phase", "abort_run"]
ACTIONS: tuple[str, ...] = ("retry_with_hint", "run_fix", "skip_phase", "abort_run")
CONTEXT_BYTES = 512
EXCERPT_CHARS = 6000
DOCTOR_TOOL_NAME = "doctor_decision"
DOCTOR_TOOL: dict[str, Any] = {
    "name": DOCTOR_TOOL_NAME,
    "description": "Record the decision about the failed phase. Call exactly once.",
    "input_schema": {
        "type": "object",
        "properties": {
            "action": {"type": "string", "enum": list(ACTIONS),
                       "description": "retry_with_hint: the Builder tries again with your hint; "
                                      "run_fix: run one shell command in the repository, then "
                                      "the checks again; skip_phase: the phase cannot and need "
                                      "not be done; abort_run: continuing is pointless or unsafe"},
            "hint": {"type": "string", "description": "for retry_with_hint: what the Builder "
                                                      "should do differently (concrete)"},
            "command": {"type": "string", "description": "for run_fix: one shell command"},
            "rationale": {"type": "string", "description": "one or two sentences: why"},
        },
        "required": ["action", "rationale"],
    },
}
_MAX_HINT = 2000
_MAX_COMMAND = 2000


class DoctorDecision(msgspec.Struct, frozen=True, kw_only=True):
    """The Doctor's verdict and what the call cost."""

    action: DoctorAction
    rationale: str
    usage: CallUsage
    hint: str = ""
    command: str = ""


def doctor_prompt(*, phase: PhaseSpec, attempt: int, excerpt: str,
                  classification: Classification | None, context_text: str) -> tuple[str, str]:
    """System prompt and first user message of a Doctor call."""
    system = (
        "You are the Doctor of autopack, an unattended coding supervisor. A check failed after "
        "a Builder attempt and the deterministic failure classifier did not know what to do. "
        "Decide the next step by calling the doctor_decision tool exactly once. Prefer "
        "retry_with_hint with a concrete hint; use run_fix only for one safe command inside the "
        "repository (no sudo, nothing outside the repository, nothing destructive); skip_phase "
        "or abort_run only when retrying cannot help.")
    pattern = classification.pattern if classification is not None else None
    evidence = "; ".join(classification.evidence)[:1000] if classification is not None else ""
    checks = "; ".join(phase.checks) or "(detected from the toolchain)"
    lines = [
        f"Diagnose the failure of phase {phase.id} (attempt {attempt}): {phase.goal}",
        f"Scope: {', '.join(phase.scope) or 'any file'}",
        f"Checks: {checks}",
        f"Classifier: {pattern or 'no deterministic pattern'}"
        + (f" (evidence: {evidence})" if evidence else ""),
    ]
    context = clip_utf8(context_text.strip(), CONTEXT_BYTES)
    if context:
        lines += ["", "Intention of the run:", context]
    tail = excerpt[-EXCERPT_CHARS:]
    lines += ["", "Failure output (last part):", "```", tail, "```"]
    return system, "\n".join(lines)


def parse_decision(message: Any, usage: CallUsage) -> DoctorDecision:
    """The decision carried by the answer's ``doctor_decision`` tool call.

    Raises :class:`DoctorMalformed` when it is missing or does not fit the schema.
    """
    calls = tool_uses(message, DOCTOR_TOOL_NAME)
    if len(calls) != 1:
        raise DoctorMalformed(f"expected one {DOCTOR_TOOL_NAME} call, got {len(calls)}", usage)
    data = calls[0].input
    if not isinstance(data, dict):
        raise DoctorMalformed("decision input is not an object", usage)
    action = data.get("action")
    if action not in ACTIONS:
        raise DoctorMalformed(f"unknown action {action!r}", usage)
    rationale, hint, command = data.get("rationale", ""), data.get("hint", ""), data.get("command", "")
    if not all(isinstance(v, str) for v in (rationale, hint, command)):
        raise DoctorMalformed("rationale, hint and command must be strings", usage)
    if action == "retry_with_hint" and not hint.strip():
        raise DoctorMalformed("retry_with_hint without a hint", usage)
    if action == "run_fix" and (not command.strip() or len(command) > _MAX_COMMAND):
        raise DoctorMalformed("run_fix needs one command (at most 2000 characters)", usage)
    return DoctorDecision(action=action, rationale=rationale.strip()[:1000], usage=usage,
                          hint=hint.strip()[:_MAX_HINT], command=command.strip())


async def ask_doctor(llm: LLM, *, run_id: str, phase: PhaseSpec, excerpt: str,
                     classification: Classification | None, context_text: str,
                     attempt: int = 1, budget: Budget | None = None,
                     max_tokens: int = 1024) -> DoctorDecision:
    """Ask the Doctor once. Returns its :class:`DoctorDecision`.

    Raises :class:`DoctorMalformed` (a failed Doctor call; ``exc.usage`` holds
    its tokens) and the :class:`~autopack.actors._llm.LLMError` family
    (``LLMAuthError``, ``BudgetExhausted``, ``LLMUnavailable``, ``LLMRequestError``).
    """
    system, user = doctor_prompt(phase=phase, attempt=attempt, excerpt=excerpt,
                                 classification=classification, context_text=context_text)
    message, usage = await llm.create(
        system=system, messages=[{"role": "user", "content": user}], tools=[DOCTOR_TOOL],
        tool_choice={"type": "tool", "name": DOCTOR_TOOL_NAME}, max_tokens=max_tokens,
        role="doctor", run_id=run_id, budget=budget)
    decision = parse_decision(message, usage)
    LOGGER.info("run %s phase %s: doctor says %s", run_id, phase.id, decision.action)
    return decision


async def run_fix(command: str, worktree: Path, env: Mapping[str, str], timeout: float,  # noqa: ASYNC109 (a limit for the child process, not a wait of ours)
                  *, max_output: int = 30_000, box: Any = None) -> CommandResult:
    """Run the Doctor's fix command once, confined like the Builder's bash tool
    (the run's sandbox ``box``, as an install-like step: a fix usually installs
    something, so it gets the network when the run's policy gives the install
    step the network; own process group, timeout, bounded output)."""
    return await run_command(command, cwd=worktree, env=env, timeout_s=timeout,
                             max_output=max_output, box=box, step="install")


# -- the normalizer's --llm (async variant, for use inside the daemon) ----------------------
def spec_tool() -> dict[str, Any]:
    """The ``submit_run_spec`` tool: its input schema is the run spec (as an object schema)."""
    tool: dict[str, Any] = normalize_request("", run_spec_json_schema())["tools"][0]
    return tool


async def normalize_with_llm(llm: LLM, plan_text: str, repo: str | None = None, *,
                             budget: Budget | None = None) -> dict[str, Any]:
    """Normalize a plan with Claude (``autopackctl normalize --llm``, through the daemon).

    Returns the validated spec as builtins (as :func:`~autopack.protocol.spec_to_builtins`).
    Raises :class:`~autopack.protocol.SpecError` when the answer is not a valid spec, and
    the ``LLMError`` family for the call itself.
    """
    from autopack.protocol import spec_to_builtins

    request = normalize_request(plan_text, run_spec_json_schema())
    message, _usage = await llm.create(role="normalizer", run_id=None, budget=budget, **request)
    calls = tool_uses(message, NORMALIZE_TOOL_NAME)
    if len(calls) != 1 or not isinstance(calls[0].input, dict):
        raise SpecError([("", "the model did not return a run spec")])
    raw = dict(calls[0].input)
    if repo is not None:
        raw["repo"] = repo
    try:
        spec = _validate_spec(raw)
    except SpecError:
        LOGGER.info("normalize --llm: invalid spec from the model: %s", json.dumps(raw)[:500])
        raise
    result: dict[str, Any] = spec_to_builtins(spec)
    return result


__all__ = ["ACTIONS", "DOCTOR_TOOL", "DoctorDecision", "DoctorMalformed", "LLMError",
           "ask_doctor", "normalize_with_llm", "parse_decision", "run_fix", "spec_tool"]

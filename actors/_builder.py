"""The Builder: one attempt at a build phase, as a tool-using agent loop on Claude.

``run_builder`` sends the phase (goal, scope, checks), the intention context
and, on a retry, the previous failure, then loops: every ``tool_use`` block of
the answer is executed by :class:`~autopack.actors._tools.Tools` inside the
worktree and answered with a ``tool_result``; the loop ends when the model
ends its turn or a limit of the attempt is reached (turns, tokens, wall time).

It never raises for an LLM failure: the result's ``stop_reason`` says what
happened, so that the usage already spent is always returned.

Stop reasons: ``end_turn`` (the model is done; run the checks), ``max_turns``,
``token_limit``, ``wall_time``, ``max_tokens`` / ``refusal`` (as the API
said), ``budget_exhausted`` (the run's budget; end the run), ``auth_error``
(the key is missing or rejected; fail the run at once), ``llm_unavailable``
(outage: retries exhausted), ``llm_error`` (the API refused the request).

Prompt layout (``lean=True``, the hardened arm): the system prompt holds only
what is the same for every attempt of the phase (role, rules, phase, scope,
checks), then the intention context as a second block, each block a cache
breakpoint, so every call after the first reads that prefix from the prompt
cache; what differs per attempt (the previous failure's evidence — the
classifier's matched lines with a few lines of context — and the hint) goes in
the first user message. Long conversations are pruned (:func:`prune_tool_results`):
old tool results are cleared in batches, never the pairing of a ``tool_use``
with its ``tool_result``. ``lean=False`` (the baseline arm) keeps the earlier
layout: the failure and hint in the system prompt, no pruning.

Scripted-model note: the first user message starts with
``Carry out phase <id> (attempt <n>): <goal>`` so a scenario can script each
attempt separately.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import msgspec
from autopack.protocol import Classification, PhaseSpec

from ._budget import Budget, Refuse
from ._llm import (
    LLM,
    BudgetExhausted,
    CallUsage,
    LLMAuthError,
    LLMRequestError,
    LLMUnavailable,
    RetryPolicy,
    message_blocks,
    tool_uses,
)
from ._tools import BUILDER_TOOLS, Tools

LOGGER = logging.getLogger(__name__)

CONTEXT_BYTES = 2048
EVIDENCE_BYTES = 1500  # the previous failure's evidence in a retry prompt
EVIDENCE_CONTEXT_LINES = 2  # lines kept before and after each matched line
PRUNE_KEEP = 2  # tool results of the last turns kept whole
PRUNE_TRIGGER_BYTES = 120_000  # prune once all tool results together hold more than this
#: The API's own clearing of old tool results (beta), comparable to our pruning's defaults.
API_CONTEXT_EDITING: dict[str, Any] = {
    "extra_headers": {"anthropic-beta": "context-management-2025-06-27"},
    "extra_body": {"context_management": {"edits": [{
        "type": "clear_tool_uses_20250919",
        "trigger": {"type": "input_tokens", "value": PRUNE_TRIGGER_BYTES // 4},
        "keep": {"type": "tool_uses", "value": 3},  # the API's default
        "clear_at_least": {"type": "input_tokens", "value": PRUNE_TRIGGER_BYTES // 8}}]}},
}
CLEARED = "[output cleared to save tokens: {n} bytes; run the tool again if you need it]"
#: Told on a precise retry (the classifier named the file and line, and gave a hint).
MINIMAL_EDIT = ("The failure names the file and line: make the smallest change that fixes it, with "
                "str_replace_based_edit_tool's str_replace on those lines (view only what you need, "
                "with view_range); do not rewrite or re-create whole files.")


class BuilderResult(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of one Builder attempt (see the module docstring for ``stop_reason``)."""

    turns: int
    usage: list[CallUsage]
    stop_reason: str
    error: str | None = None
    tool_calls: int = 0
    refused: int = 0  # tool calls refused for leaving the worktree
    summary: str = ""  # the model's last text
    refusal: Refuse | None = None  # the figures, when stop_reason is budget_exhausted

    @property
    def total_tokens(self) -> int:
        return sum(u.total_tokens for u in self.usage)


def clip_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, on a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def evidence_excerpt(output: str, evidence: list[str], *, context: int = EVIDENCE_CONTEXT_LINES,
                     limit: int = EVIDENCE_BYTES) -> str:
    """The classifier's matched lines with ``context`` lines around each, from ``output``.

    Windows that touch are merged; ``...`` marks a gap; the result is cut to
    ``limit`` UTF-8 bytes. Evidence not found in the output is listed as is.
    Returns ``""`` when there is no evidence.
    """
    lines = output.splitlines()
    stripped = [ln.strip() for ln in lines]
    keep: set[int] = set()
    missing: list[str] = []
    for ev in evidence:
        needle = ev.strip()
        hit = next((i for i, ln in enumerate(stripped) if needle and needle in ln), None)
        if hit is None:
            if needle:
                missing.append(needle)
            continue
        keep.update(range(max(0, hit - context), min(len(lines), hit + context + 1)))
    parts: list[str] = []
    last = -2
    for i in sorted(keep):
        if parts and i != last + 1:
            parts.append("...")
        parts.append(lines[i].rstrip())
        last = i
    parts += missing
    return clip_utf8("\n".join(parts), limit)


def retry_text(*, previous: Classification | None, evidence: str | None,
               retry_hint: str | None) -> str:
    """What a retry tells the Builder about the previous attempt ("" for a first attempt)."""
    if previous is None and not retry_hint and not evidence:
        return ""
    parts = ["The previous attempt at this phase failed"
             + (f" ({previous.pattern})." if previous is not None and previous.pattern else ".")]
    if evidence:
        parts += ["Evidence from the failed check:", "```", evidence, "```"]
    if retry_hint:
        parts.append(f"Hint: {retry_hint[:2000]}")
    return "\n".join(parts)


def retry_class(previous: Classification | None, retry_hint: str | None) -> str | None:
    """``"precise"`` when the classifier named the previous failure (a pattern and a hint)
    with a file and a line, ``"named"`` with a pattern and a hint only, else ``None`` (a
    first attempt, or a retry on the Doctor's word or the raw output)."""
    if previous is None or previous.pattern is None or not retry_hint:
        return None
    details = previous.details or {}
    return "precise" if details.get("file") and details.get("line") is not None else "named"


def retry_model(policy: RetryPolicy, kind: str | None) -> str | None:
    """The model of a retry's calls under ``policy`` (``None``: the client's own)."""
    if kind is None or not policy.model:
        return None
    return policy.model if policy.model_on == "named" or kind == "precise" else None


def prune_tool_results(messages: list[dict[str, Any]], *, keep: int = PRUNE_KEEP,
                       trigger_bytes: int = PRUNE_TRIGGER_BYTES) -> int:
    """Clear, in place, the content of tool results older than the last ``keep`` tool-result
    messages, once all tool results together hold more than ``trigger_bytes``.

    Every ``tool_result`` block stays, with its ``tool_use_id`` and flags, so each
    ``tool_use`` keeps its answer (the API requires it). The newest cleared
    message carries a cache breakpoint, so the next turn, which clears one message
    more, reads everything up to it from the prompt cache instead of writing the
    whole conversation again. Returns the bytes cleared by this call.
    """
    holders = [i for i, m in enumerate(messages)
               if m.get("role") == "user" and isinstance(m.get("content"), list)
               and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in m["content"])]
    old = holders[:-keep] if keep > 0 else holders
    total = sum(_result_bytes(b) for i in holders for b in messages[i]["content"] if _clearable(b))
    if not old or total <= trigger_bytes:
        return 0
    cleared = 0
    for i in old:
        blocks = []
        for b in messages[i]["content"]:
            if isinstance(b, dict):
                b = {k: v for k, v in b.items() if k != "cache_control"}
            if _clearable(b):
                cleared += _result_bytes(b)
                b = {**b, "content": CLEARED.format(n=_result_bytes(b))}
            blocks.append(b)
        messages[i] = {**messages[i], "content": blocks}
    last = messages[old[-1]]
    last["content"][-1] = {**last["content"][-1], "cache_control": {"type": "ephemeral"}}
    return cleared


def _result_bytes(block: dict[str, Any]) -> int:
    content = block.get("content")
    if isinstance(content, str):
        return len(content.encode())
    return len(str(content).encode())


def _clearable(block: Any) -> bool:
    return (isinstance(block, dict) and block.get("type") == "tool_result"
            and not str(block.get("content", "")).startswith("[output cleared"))


def builder_system_prompt(*, phase: PhaseSpec, context_text: str, retry_hint: str | None,
                          previous: Classification | None, command_timeout_s: float,
                          workdir: str = "") -> str:
    """The Builder's system prompt in the baseline layout (stable for one attempt; the
    failure and hint of a retry in it, so it changes between attempts). ``workdir``: the
    spec's working directory inside the repository, where both tools start."""
    scope = ", ".join(phase.scope) if phase.scope else "any file in the repository"
    where = "the repository root" if not workdir else \
        f"{workdir.strip('/')}/ in the repository (the run's working directory; scope globs " \
        "stay relative to the repository root)"
    checks = "\n".join(f"  - {c}" for c in phase.checks) or "  - (detected from the toolchain)"
    parts = [
        "You are the Builder of autopack, an unattended coding supervisor. You carry out one "
        "phase of a planned change in a git worktree of the repository, with the tools given: "
        f"str_replace_based_edit_tool to view and edit files (paths relative to {where}) and "
        f"bash to run commands (each command starts a fresh shell in {where}, stdin closed, "
        f"killed after {command_timeout_s:g} s). Commands run in a sandbox: "
        "only the worktree, the run's environment and /tmp are writable, there is no network, "
        "and nothing a command leaves running in the background outlives it.",
        "",
        f"Phase {phase.id}: {phase.goal}",
        f"Scope (the only paths you may change): {scope}",
        "Checks that must pass when you are done:",
        checks,
        "",
        "Rules: stay within the scope; do not commit, push or change git configuration "
        "(autopack commits); do not install system packages. Run the checks yourself before "
        "you finish. When the phase is done, reply with a two-line summary and stop.",
    ]
    context = clip_utf8(context_text.strip(), CONTEXT_BYTES)
    if context:
        parts += ["", "Intention of the run (keep to it):", context]
    if previous is not None or retry_hint:
        parts += ["", "The previous attempt at this phase failed."]
        if previous is not None:
            evidence = "; ".join(previous.evidence)[:1000]
            parts.append(f"Failure pattern: {previous.pattern or 'unknown'}; evidence: {evidence}")
        if retry_hint:
            parts.append(f"Hint: {retry_hint[:2000]}")
    return "\n".join(parts)


def lean_system_blocks(*, phase: PhaseSpec, context_text: str,
                       command_timeout_s: float, workdir: str = "") -> list[dict[str, Any]]:
    """The lean layout's system prompt: the phase's stable part, then the intention
    context, each a cache breakpoint (see the module docstring)."""
    stable = builder_system_prompt(phase=phase, context_text="", retry_hint=None, previous=None,
                                   command_timeout_s=command_timeout_s, workdir=workdir)
    blocks: list[dict[str, Any]] = [{"type": "text", "text": stable,
                                     "cache_control": {"type": "ephemeral"}}]
    context = clip_utf8(context_text.strip(), CONTEXT_BYTES)
    if context:
        blocks.append({"type": "text", "text": "Intention of the run (keep to it):\n" + context,
                       "cache_control": {"type": "ephemeral"}})
    return blocks


async def run_builder(llm: LLM, *, worktree: Path, env: Mapping[str, str], run_id: str,
                      phase: PhaseSpec, context_text: str, retry_hint: str | None,
                      max_turns: int, wall_s: float, token_limit: int | None,
                      attempt: int = 1, previous: Classification | None = None,
                      budget: Budget | None = None, command_timeout_s: float = 300.0,
                      on_usage: Callable[[CallUsage], None] | None = None,
                      box: Any = None, cwd: Path | None = None,
                      lean: bool = False, evidence: str | None = None,
                      prune: bool | str = True,
                      retry_policy: RetryPolicy | None = None) -> BuilderResult:
    """Run one Builder attempt in ``worktree`` and return what happened.

    ``env`` is the environment of bash commands (the run's venv on ``PATH``).
    ``token_limit`` bounds this attempt's tokens, ``budget`` the run's;
    ``on_usage`` is called after every call (so a cancelled attempt's tokens
    are still recorded). ``lean`` selects the cache-friendly layout with
    ``evidence`` (the previous failure's matched lines) in the first message and,
    with ``prune``, old tool results cleared (``True`` or ``"ours"``: by us, see
    :func:`prune_tool_results`; ``"api"``: by the API's context editing,
    :data:`API_CONTEXT_EDITING`; ``False``: never). In the lean layout a retry the
    classifier named (:func:`retry_class`) follows ``retry_policy`` (default: the
    client's ``builder_retry``): a precise one is told to make the minimal edit
    (:data:`MINIMAL_EDIT`), and either may go to a cheaper model (:func:`retry_model`).
    Cancellation propagates (the running command's process group is killed).
    """
    tools = Tools(worktree, env, command_timeout_s=command_timeout_s, box=box, cwd=cwd)
    workdir = tools.cwd.relative_to(tools.worktree).as_posix()  # both resolved; no I/O
    workdir = "" if workdir == "." else workdir
    first = f"Carry out phase {phase.id} (attempt {attempt}): {phase.goal}"
    system: str | list[dict[str, Any]]
    kind: str | None = None  # the retry's class, lean layout only
    if lean:
        system = lean_system_blocks(phase=phase, context_text=context_text,
                                    command_timeout_s=command_timeout_s, workdir=workdir)
        retry = retry_text(previous=previous, evidence=evidence, retry_hint=retry_hint)
        if retry:
            first += "\n\n" + retry
        kind = retry_class(previous, retry_hint)
        if kind == "precise":
            first += "\n" + MINIMAL_EDIT
    else:
        system = builder_system_prompt(phase=phase, context_text=context_text,
                                       retry_hint=retry_hint, previous=previous,
                                       command_timeout_s=command_timeout_s, workdir=workdir)
    policy = retry_policy or getattr(llm, "builder_retry", None) or RetryPolicy()
    model = retry_model(policy, kind)
    messages: list[dict[str, Any]] = [{"role": "user", "content": first}]
    usage: list[CallUsage] = []
    stop_reason, error, summary = "wall_time", None, ""
    refusal: Refuse | None = None
    turns = 0
    with anyio.move_on_after(wall_s):
        while True:
            if turns >= max_turns:
                stop_reason = "max_turns"
                break
            if token_limit is not None and sum(u.total_tokens for u in usage) >= token_limit:
                stop_reason = "token_limit"
                break
            if lean and prune in (True, "ours"):
                cleared = prune_tool_results(messages)
                if cleared:
                    LOGGER.info("run %s phase %s: cleared %d bytes of old tool results",
                                run_id, phase.id, cleared)
            try:
                message, call_usage = await llm.create(
                    system=system, messages=messages, tools=BUILDER_TOOLS, role="builder",
                    run_id=run_id, budget=budget, cache_messages=True,
                    extra=API_CONTEXT_EDITING if lean and prune == "api" else None,
                    model=model)
            except LLMAuthError as exc:
                stop_reason, error = "auth_error", str(exc)
                break
            except BudgetExhausted as exc:
                stop_reason, error, refusal = "budget_exhausted", str(exc), exc.refusal
                break
            except LLMUnavailable as exc:
                stop_reason, error = "llm_unavailable", str(exc)
                break
            except LLMRequestError as exc:
                stop_reason, error = "llm_error", str(exc)
                break
            turns += 1
            usage.append(call_usage)
            if on_usage is not None:
                on_usage(call_usage)
            texts = [str(getattr(b, "text", "")) for b in message.content
                     if getattr(b, "type", None) == "text"]
            if texts:
                summary = texts[-1]
            messages.append({"role": "assistant", "content": message_blocks(message)})
            calls = tool_uses(message)
            if message.stop_reason == "tool_use" and calls:
                results = []
                for block in calls:
                    result = await tools.run(block.name, block.input)
                    results.append(result.to_block(block.id))
                messages.append({"role": "user", "content": results})
                continue
            if message.stop_reason == "pause_turn":
                continue
            stop_reason = str(message.stop_reason or "end_turn")
            if stop_reason == "stop_sequence":
                stop_reason = "end_turn"
            break
    LOGGER.info("run %s phase %s attempt %d: builder stopped (%s) after %d turns, %d tool calls",
                run_id, phase.id, attempt, stop_reason, turns, tools.calls)
    return BuilderResult(turns=turns, usage=usage, stop_reason=stop_reason, error=error,
                         tool_calls=tools.calls, refused=tools.refused, summary=summary[:2000],
                         refusal=refusal)

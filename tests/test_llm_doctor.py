"""The Doctor (and normalize --llm) through the real SDK against the scripted server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from autopack.actors._doctor import ask_doctor, normalize_with_llm, run_fix, spec_tool
from autopack.actors._llm import LLM, DoctorMalformed
from autopack.protocol import Classification, PhaseSpec, SpecError
from autopack.testing import serve_scripted

PHASE = PhaseSpec(id="api", goal="Add GET /health", scope=["src/**"], checks=["pytest -q"])
MATCH = "Diagnose the failure of phase api"


def decision(inp: Any, name: str = "doctor_decision") -> dict[str, Any]:
    return {"match": MATCH, "steps": [{
        "content": [{"type": "tool_use", "name": name, "input": inp}],
        "usage": {"input_tokens": 900, "output_tokens": 60}}]}


def scripted(scripts: list[dict[str, Any]]) -> dict[str, Any]:
    """Usage figures as scripted (these tests check the plumbing of exact figures)."""
    return {"usage": "scripted", "scripts": scripts}


def llm_for(url: str) -> LLM:
    return LLM(base_url=url, api_key="test-key", timeout_s=5, retry_base_s=0.02)


async def consult(url: str, **kw: Any) -> Any:
    async with llm_for(url) as llm:
        return await ask_doctor(llm, run_id="run-d", phase=PHASE,
                                excerpt="x" * 10_000 + "\nE   weird failure",
                                classification=Classification(pattern=None),
                                context_text="ü" * 400, **kw)


async def test_doctor_answer_through_forced_tool() -> None:
    scenario = [decision({"action": "retry_with_hint", "hint": "  register the route in app.py ",
                          "rationale": "the handler exists but is not routed"})]
    async with serve_scripted(scripted(scenario)) as server:
        result = await consult(server.url)
        body = server.requests[0]
    assert result.action == "retry_with_hint"
    assert result.hint == "register the route in app.py"
    assert result.usage.role == "doctor"
    assert result.usage.input_tokens == 900
    assert body["tool_choice"] == {"type": "tool", "name": "doctor_decision"}
    user = body["messages"][0]["content"]
    assert "weird failure" in user
    assert "no deterministic pattern" in user
    assert "ü" * 256 in user
    assert "ü" * 257 not in user
    assert len(user) < 8000  # excerpt bounded


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"action": "reboot_universe", "rationale": "?"}, id="unknown-action"),
        pytest.param({"action": "retry_with_hint", "rationale": "no hint"}, id="hint-missing"),
        pytest.param({"action": "run_fix", "rationale": "no command"}, id="command-missing"),
        pytest.param({"action": "skip_phase", "rationale": 42}, id="rationale-not-text"),
        pytest.param("just text", id="input-not-object"),
    ],
)
async def test_malformed_answers_raise_doctor_malformed(answer: Any) -> None:
    async with serve_scripted(scripted([decision(answer)])) as server:
        with pytest.raises(DoctorMalformed) as info:
            await consult(server.url)
    assert info.value.usage is not None
    assert info.value.usage.input_tokens == 900


async def test_answer_without_the_tool_is_malformed() -> None:
    scenario = [{"match": MATCH, "steps": [{"content": [{"type": "text", "text": "try harder"}]}]}]
    async with serve_scripted(scenario) as server:
        with pytest.raises(DoctorMalformed, match="expected one doctor_decision"):
            await consult(server.url)


async def test_run_fix_decision_and_confined_execution(tmp_path: Path) -> None:
    scenario = [decision({"action": "run_fix", "command": "echo fixed > marker; pwd",
                          "rationale": "stale build output"})]
    async with serve_scripted(scenario) as server:
        result = await consult(server.url)
    assert result.action == "run_fix"
    outcome = await run_fix(result.command, tmp_path, {"PATH": os.environ["PATH"]}, timeout=5)
    assert outcome.exit_code == 0
    assert outcome.output.strip() == os.path.realpath(tmp_path)  # noqa: ASYNC240
    assert (tmp_path / "marker").read_text() == "fixed\n"
    slow = await run_fix("sleep 10", tmp_path, {"PATH": os.environ["PATH"]}, timeout=0.3)
    assert slow.timed_out


def test_spec_tool_schema_is_an_object() -> None:
    tool = spec_tool()
    assert tool["input_schema"]["type"] == "object"
    assert "phases" in tool["input_schema"]["properties"]
    assert "PhaseSpec" in tool["input_schema"]["$defs"]


async def test_normalize_with_llm_validates_the_spec() -> None:
    good = {"goal": "Add health endpoint",
            "phases": [{"id": "endpoint", "goal": "Add GET /health", "scope": ["src/**"]}]}
    bad = {"goal": "x", "phases": [{"id": "Bad Id", "goal": "y"}]}
    scenario = [
        {"match": "Plan A", "steps": [{"content": [{"type": "tool_use", "name": "submit_run_spec",
                                                    "input": good}]}]},
        {"match": "Plan B", "steps": [{"content": [{"type": "tool_use", "name": "submit_run_spec",
                                                    "input": bad}]}]},
    ]
    async with serve_scripted(scenario) as server:
        async with llm_for(server.url) as llm:
            spec = await normalize_with_llm(llm, "Plan A: add a health endpoint", repo="/r")
            with pytest.raises(SpecError):
                await normalize_with_llm(llm, "Plan B: nonsense")
    assert spec["repo"] == "/r"
    assert spec["phases"][0]["id"] == "endpoint"
    assert spec["phases"][0]["kind"] == "build"

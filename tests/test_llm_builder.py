"""The Builder loop through the real SDK against the scripted server, in real git worktrees."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
from autopack.actors._budget import Budget
from autopack.actors._builder import builder_system_prompt, run_builder
from autopack.actors._drift import changed_files, outside_scope
from autopack.actors._llm import LLM
from autopack.protocol import Classification, PhaseSpec
from autopack.testing import load_scenario, serve_scripted

SCENARIOS = Path(__file__).resolve().parent.parent / "actors" / "testing" / "scenarios"
PHASE = PhaseSpec(id="add-greet", goal="Add src/greet.py with greet(name)", scope=["src/**"],
                  checks=["python -c 'import greet'"])
ENV = {"PATH": os.environ["PATH"], "LC_ALL": "C"}


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "t@example.invalid"],
                 ["config", "user.name", "t"]):
        subprocess.run(["git", "-C", str(path), *args], check=True)
    (path / "src").mkdir()
    (path / "src" / "__init__.py").write_text("")
    (path / "README.md").write_text("demo\n")
    subprocess.run(["git", "-C", str(path), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(path), "commit", "-qm", "base"], check=True)
    return path


def llm_for(url: str, **kw: Any) -> LLM:
    return LLM(base_url=url, api_key="test-key", timeout_s=5, retry_base_s=0.02, **kw)


async def build(llm: LLM, wt: Path, **kw: Any) -> Any:
    args: dict[str, Any] = {"worktree": wt, "env": ENV, "run_id": "run-a", "phase": PHASE,
                            "context_text": "Goal: greet people politely.", "retry_hint": None,
                            "max_turns": 10, "wall_s": 30, "token_limit": None}
    args.update(kw)
    return await run_builder(llm, **args)


async def test_builder_creates_and_edits_files_and_refuses_escapes(tmp_path: Path) -> None:
    wt = make_repo(tmp_path / "wt")
    seen: list[int] = []
    async with serve_scripted(SCENARIOS / "builder_basic.json") as server:
        async with llm_for(server.url) as llm:
            result = await build(llm, wt, on_usage=lambda u: seen.append(u.total_tokens))
        stats = server.stats()
        last = server.requests[-1]
    assert result.stop_reason == "end_turn"
    assert result.error is None
    assert result.turns == 4
    assert result.tool_calls == 7
    assert result.refused == 2
    assert result.summary.startswith("Added src/greet.py")
    assert (wt / "src" / "greet.py").read_text() == (
        '"""Greetings."""\ndef greet(name):\n    return f\'hello, {name}!\'\n')
    assert not (tmp_path / "escaped.txt").exists()
    # what the model was told: the bash output, and errors for both escapes
    tool_results = [b for m in last["messages"] if m["role"] == "user"
                    and isinstance(m["content"], list) for b in m["content"]]
    assert any("hello, ada!" in b["content"] for b in tool_results)
    refused = [b for b in tool_results if b.get("is_error")]
    assert len(refused) == 2
    assert all("outside the worktree" in b["content"] for b in refused)
    # token totals equal the server's usage figures
    totals = stats["usage_totals"]
    for key in totals:
        assert sum(getattr(u, key) for u in result.usage) == totals[key]
    assert sum(seen) == result.total_tokens
    # the worktree changed only inside the phase's scope
    assert outside_scope(await changed_files(wt), PHASE.scope) == []


def test_system_prompt_carries_phase_context_and_retry() -> None:
    previous = Classification(pattern="test_failure", evidence=["FAILED tests/test_g.py::test_x"])
    prompt = builder_system_prompt(phase=PHASE, context_text="é" * 3000, retry_hint="use f-strings",
                                   previous=previous, command_timeout_s=60)
    assert PHASE.goal in prompt
    assert "src/**" in prompt
    assert PHASE.checks[0] in prompt
    assert "é" * 1024 in prompt
    assert "é" * 1025 not in prompt
    assert "test_failure" in prompt
    assert "FAILED tests/test_g.py::test_x" in prompt
    assert "Hint: use f-strings" in prompt
    plain = builder_system_prompt(phase=PHASE, context_text="", retry_hint=None, previous=None,
                                  command_timeout_s=60)
    assert "previous attempt" not in plain


def endless(match: str) -> dict[str, Any]:
    step = {"content": [{"type": "tool_use", "name": "bash", "input": {"command": "true"}}],
            "usage": {"input_tokens": 100, "output_tokens": 10}}
    return {"match": match, "steps": [step] * 20}


@pytest.mark.parametrize(
    ("kw", "stop"),
    [
        pytest.param({"max_turns": 3}, "max_turns", id="turns"),
        pytest.param({"token_limit": 250}, "token_limit", id="attempt-tokens"),
    ],
)
async def test_builder_limits(tmp_path: Path, kw: dict[str, Any], stop: str) -> None:
    wt = make_repo(tmp_path / "wt")
    scenario = {"usage": "scripted", "scripts": [endless("Carry out phase add-greet")]}
    async with serve_scripted(scenario) as server:
        async with llm_for(server.url) as llm:
            result = await build(llm, wt, **kw)
    assert result.stop_reason == stop
    assert result.turns == 3  # 3 turns of 110 tokens each reach every limit above


async def test_builder_stops_when_the_run_budget_cannot_pay_the_next_turn(tmp_path: Path) -> None:
    wt = make_repo(tmp_path / "wt")
    budget = Budget(token_limit=6000)
    async with serve_scripted([endless("Carry out phase add-greet")]) as server:
        async with llm_for(server.url) as llm:
            result = await build(llm, wt, budget=budget)
        served = sum(server.stats()["usage_totals"].values())
    assert result.stop_reason == "budget_exhausted"
    assert result.refusal is not None
    assert result.refusal.scope == "run"
    assert result.turns >= 1
    assert served == budget.tokens_used == result.total_tokens <= 6000


async def test_builder_wall_time_kills_the_running_command(tmp_path: Path) -> None:
    wt = make_repo(tmp_path / "wt")
    step = {"content": [{"type": "tool_use", "name": "bash",
                         "input": {"command": "echo $$ > pid; sleep 30"}}]}
    async with serve_scripted([{"match": "Carry out phase", "steps": [step]}]) as server:
        async with llm_for(server.url) as llm:
            result = await build(llm, wt, wall_s=1.0)
    assert result.stop_reason == "wall_time"
    assert result.turns == 1
    pid = int((wt / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_builder_auth_error_stops_at_once(tmp_path: Path) -> None:
    wt = make_repo(tmp_path / "wt")
    scenario = [{"match": "Carry out phase", "steps": [{"errors": [{"status": 401}]}]}]
    async with serve_scripted(scenario) as server:
        async with llm_for(server.url) as llm:
            result = await build(llm, wt)
        assert server.stats()["requests"] == 1
    assert result.stop_reason == "auth_error"
    assert "rejected the key" in (result.error or "")
    assert result.turns == 0
    assert result.usage == []


async def test_retry_attempt_is_scripted_separately_and_carries_the_hint(tmp_path: Path) -> None:
    wt = make_repo(tmp_path / "wt")
    scenario = [
        {"match": "Carry out phase add-greet (attempt 1)",
         "steps": [{"content": [{"type": "text", "text": "first"}]}]},
        {"match": "Carry out phase add-greet (attempt 2)",
         "steps": [{"content": [{"type": "text", "text": "second"}]}]},
    ]
    async with serve_scripted(scenario) as server:
        async with llm_for(server.url) as llm:
            first = await build(llm, wt)
            second = await build(llm, wt, attempt=2, retry_hint="install PyYAML first",
                                 previous=Classification(pattern="python_missing_dep",
                                                         evidence=["No module named 'yaml'"]))
        system = "".join(b["text"] for b in server.requests[-1]["system"])
    assert (first.summary, second.summary) == ("first", "second")
    assert "install PyYAML first" in system
    assert "python_missing_dep" in system


async def test_rate_limit_storm_across_ten_concurrent_builders(tmp_path: Path) -> None:
    scenario = load_scenario(SCENARIOS / "builder_basic.json")
    scenario["storm"] = {"status": 429, "retry_after": 0.2, "seconds": 0.5}
    concurrency = 4
    results: dict[int, Any] = {}
    async with serve_scripted(scenario) as server:
        async with llm_for(server.url, max_concurrency=concurrency, max_attempts=20) as llm:

            async def one(i: int) -> None:
                wt = make_repo(tmp_path / f"wt{i}")
                results[i] = (wt, await build(llm, wt, run_id=f"run-{i}"))

            async with trio.open_nursery() as nursery:
                for i in range(10):
                    nursery.start_soon(one, i)
        stats = server.stats()
    assert len(results) == 10
    for wt, result in results.values():
        assert result.stop_reason == "end_turn"
        assert result.turns == 4
        assert (wt / "src" / "greet.py").exists()
    assert stats["by_status"]["200"] == 40
    # a storm of 0.5 s with retry-after 0.2 s: at most ~4 waves of `concurrency` 429s
    assert stats["by_status"]["429"] <= concurrency * 4, stats


async def test_demo_scenario_builds_the_demo_repository(tmp_path: Path) -> None:
    """The offline demo's script (actors/testing/scenarios/demo.json) on a copy of examples/demo-repo:
    the Builder adds subtract() and the repository's own tests pass afterwards."""
    import shutil
    import sys

    source = Path(__file__).resolve().parent.parent / "examples" / "demo-repo"  # noqa: ASYNC240
    assert source.is_dir(), source  # noqa: ASYNC240 (test setup)
    wt = tmp_path / "demo"
    shutil.copytree(source, wt)  # noqa: ASYNC240
    phase = PhaseSpec(id="add-subtract", goal="Add subtract(a, b) to calc, exported, with a test",
                      scope=["calc/**", "tests/**"], checks=["python -m pytest -q"])
    env = {**ENV, "PATH": f"{Path(sys.executable).parent}:{ENV['PATH']}"}
    async with serve_scripted(SCENARIOS / "demo.json") as server:
        async with llm_for(server.url) as llm:
            result = await build(llm, wt, phase=phase, env=env)
    assert result.stop_reason == "end_turn"
    assert result.refused == 0
    assert result.turns == 4
    check = await trio.run_process([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                                   cwd=wt, capture_stdout=True, check=False)
    assert check.returncode == 0, check.stdout.decode()
    assert b"3 passed" in check.stdout

"""The LLM client through the real ``anthropic`` SDK against the scripted server."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio
from autopack.actors._budget import Budget
from autopack.actors._llm import (
    DEFAULT_MODEL,
    LLM,
    BudgetExhausted,
    CallUsage,
    LLMAuthError,
    LLMRequestError,
    LLMUnavailable,
    call_cost_usd,
    read_api_key,
)
from autopack.testing import serve_scripted

KEY = "sk-ant-test-0123456789-SECRET"


def one_step(match: str, **step: Any) -> dict[str, Any]:
    step.setdefault("content", [{"type": "text", "text": "ok"}])
    return {"match": match, "steps": [step]}


def llm_for(url: str, **kw: Any) -> LLM:
    kw.setdefault("api_key", KEY)
    kw.setdefault("retry_base_s", 0.02)
    return LLM(base_url=url, timeout_s=5, **kw)


async def ask(llm: LLM, text: str, run_id: str = "run-1", **kw: Any) -> tuple[Any, CallUsage]:
    return await llm.create(system=f"system for {text}", messages=[{"role": "user", "content": text}],
                            role="builder", run_id=run_id, **kw)


def test_default_model_is_not_deprecated() -> None:
    from anthropic._data import DEPRECATED_MODELS

    assert DEFAULT_MODEL not in DEPRECATED_MODELS
    assert DEFAULT_MODEL.startswith("claude-")


def test_key_sources(tmp_path: Path) -> None:
    (tmp_path / "anthropic_api_key").write_text(KEY + "\n")
    key = read_api_key(env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert key is not None
    assert key.reveal() == KEY
    assert KEY not in repr(key)
    assert KEY not in str(key)
    assert read_api_key(env={"ANTHROPIC_API_KEY": "from-env",
                             "CREDENTIALS_DIRECTORY": str(tmp_path)}).reveal() == "from-env"  # type: ignore[union-attr]
    other = tmp_path / "other"
    other.write_text("from-file")
    assert read_api_key(env={}, api_key_file=str(other)).reveal() == "from-file"  # type: ignore[union-attr]
    assert read_api_key(env={}, api_key_file=str(tmp_path / "missing")) is None


async def test_usage_is_recorded_and_cache_breakpoints_are_sent() -> None:
    usage = {"input_tokens": 11, "output_tokens": 7, "cache_creation_input_tokens": 300,
             "cache_read_input_tokens": 5}
    scenario = {"usage": "scripted", "scripts": [one_step("hello", usage=usage)]}
    async with serve_scripted(scenario) as server:
        async with llm_for(server.url) as llm:
            tools = [{"type": "bash_20250124", "name": "bash"}]
            message, call = await ask(llm, "hello", tools=tools, cache_messages=True)
        body = server.requests[0]
    assert message.content[0].text == "ok"
    # claude-sonnet-4-6: $3 input, $15 output, $3.75 cache write, $0.30 cache read per Mtok
    cost = 11 * 3_000_000 + 7 * 15_000_000 + 300 * 3_750_000 + 5 * 300_000
    assert call == CallUsage(model=DEFAULT_MODEL, role="builder", input_tokens=11,
                             output_tokens=7, cache_creation_input_tokens=300,
                             cache_read_input_tokens=5, cost_pusd=cost)
    assert call.cost_usd == pytest.approx(0.0012645)
    assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert body["metadata"] == {"user_id": "run-1"}
    assert llm.statistics().cache_creation_input_tokens == 300


async def test_missing_key_fails_at_once_without_a_request() -> None:
    async with serve_scripted([one_step("hello")]) as server:
        async with LLM(base_url=server.url, env={}) as llm:
            assert not llm.has_key
            with pytest.raises(LLMAuthError, match="ANTHROPIC_API_KEY"):
                await ask(llm, "hello")
        assert server.stats()["requests"] == 0


@pytest.mark.parametrize("status", [pytest.param(401, id="401"), pytest.param(403, id="403")])
async def test_rejected_key_fails_at_once(status: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    scenario = [one_step("hello", errors=[{"status": status, "times": 5}])]
    async with serve_scripted(scenario) as server:
        async with llm_for(server.url) as llm:
            with pytest.raises(LLMAuthError) as info:
                await ask(llm, "hello")
            stats = llm.statistics()
        assert server.stats()["requests"] == 1  # no retries
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value)
    assert KEY not in caplog.text
    assert KEY not in repr(llm)
    assert stats.auth_failures == 1
    assert stats.breaker_state == "closed"


async def test_bad_request_is_not_retried() -> None:
    async with serve_scripted([one_step("hello", errors=[{"status": 400, "times": 3}])]) as server:
        async with llm_for(server.url) as llm:
            with pytest.raises(LLMRequestError, match="400"):
                await ask(llm, "hello")
        assert server.stats()["requests"] == 1


async def test_transient_errors_and_a_hang_are_retried() -> None:
    errors = [{"status": 500}, {"status": 529, "retry_after": 0.05}, {"hang": 3.0}]
    async with serve_scripted([one_step("hello", errors=errors)]) as server:
        async with LLM(base_url=server.url, api_key=KEY, timeout_s=0.3, retry_base_s=0.02) as llm:
            message, _ = await ask(llm, "hello")
            stats = llm.statistics()
        assert message.content[0].text == "ok"
        assert server.stats()["hangs"] == 1
    assert stats.requests == 4
    assert stats.calls == 1
    assert stats.failures == 3


async def test_retries_are_bounded() -> None:
    async with serve_scripted([one_step("hello", errors=[{"status": 500, "times": 50}])]) as server:
        async with llm_for(server.url, max_attempts=3, breaker_threshold=100) as llm:
            with pytest.raises(LLMUnavailable, match="3 attempts"):
                await ask(llm, "hello")
        assert server.stats()["requests"] == 3


async def test_rate_limit_storm_across_ten_callers_is_bounded() -> None:
    """A 0.6 s storm of 429s: the shared backoff holds every caller, so the storm costs a few
    waves of at most `max_concurrency` requests instead of each caller retrying on its own."""
    scenario = {"storm": {"status": 429, "retry_after": 0.2, "seconds": 0.6},
                "scripts": [one_step("hello")]}
    concurrency, callers = 4, 10
    done: list[str] = []
    async with serve_scripted(scenario) as server:
        async with llm_for(server.url, max_concurrency=concurrency, max_attempts=20) as llm:

            async def caller(i: int) -> None:
                await ask(llm, "hello", run_id=f"run-{i}")
                done.append(f"run-{i}")

            async with trio.open_nursery() as nursery:
                for i in range(callers):
                    nursery.start_soon(caller, i)
            stats = llm.statistics()
        served = server.stats()
    assert len(done) == callers
    assert served["by_status"]["200"] == callers
    # 429 waves at ~0, 0.2, 0.4 s (each at most `concurrency` requests), one more for timing
    # slack; callers retrying on their own would send ~3 each (40 requests in all)
    bound = callers + concurrency * 4
    assert served["requests"] <= bound, served
    assert served["max_in_flight"] <= concurrency
    assert stats.rate_limited == served["by_status"]["429"]
    assert stats.breaker_state == "closed"


async def test_circuit_breaker_opens_and_recovers() -> None:
    """Three consecutive 500s open the breaker; calls pause for the cool-down; one probe fails
    (breaker re-opens), the next succeeds and closes it."""
    errors = [{"status": 500, "times": 4}]
    async with serve_scripted([one_step("hello", errors=errors)]) as server:
        async with llm_for(server.url, breaker_threshold=3, breaker_cooldown_s=0.2,
                           max_attempts=10) as llm:
            states: list[str] = []

            async def watch() -> None:
                while True:
                    state = llm.statistics().breaker_state
                    if not states or states[-1] != state:
                        states.append(state)
                    await trio.sleep(0.005)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                message, _ = await ask(llm, "hello")
                nursery.cancel_scope.cancel()
            stats = llm.statistics()
        assert server.stats()["requests"] == 5
    assert message.content[0].text == "ok"
    assert stats.breaker_opens == 2  # after the 3rd failure, and after the failed probe
    assert stats.breaker_state == "closed"
    assert stats.consecutive_failures == 0
    assert "open" in states
    # half_open lasts only as long as the probe request: too short to observe by polling;
    # breaker_opens == 2 shows a failed probe re-opened it


async def ask_until_refused(llm: LLM, budget: Budget) -> BudgetExhausted:
    for _ in range(20):
        try:
            await ask(llm, "hello", budget=budget, max_tokens=100)
        except BudgetExhausted as exc:
            return exc
    raise AssertionError("never refused")


async def test_budget_refuses_the_call_that_could_overshoot() -> None:
    async with serve_scripted([one_step("hello", usage={"output_tokens": 100})]) as server:
        async with llm_for(server.url, min_output_tokens=100) as llm:
            budget = Budget(token_limit=800)
            exc = await ask_until_refused(llm, budget)
        served = server.stats()
    assert exc.reason == "token_budget"
    assert exc.refusal is not None
    assert exc.refusal.scope == "run"
    assert served["requests"] >= 2
    # every call made was paid for, and the total never passed the limit
    assert sum(served["usage_totals"].values()) == budget.tokens_used <= 800


def test_usd_pricing_and_budget() -> None:
    prices = {"m": [3.0, 15.0, 3.75, 0.3]}
    call = CallUsage(model="m", role="doctor", input_tokens=1_000_000, output_tokens=100_000,
                     cache_creation_input_tokens=0, cache_read_input_tokens=1_000_000)
    assert call_cost_usd(call, prices) == pytest.approx(3.0 + 1.5 + 0.3)
    assert call_cost_usd(call, {}) is None
    budget = Budget(usd_limit=4.0, prices=prices)
    assert budget.limits()[0].usd == 4.0
    budget.record(tokens=call.total_tokens, pusd=4_800_000_000_000)
    assert budget.usd_used == pytest.approx(4.8)

"""Budgets that cannot be overshot: the real SDK against the scripted server, whose token
counts derive from what each request carries (phase, run and daily scopes; a refused
call; a shrunk ``max_tokens``; the local estimate when ``count_tokens`` is missing)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from autopack.actors._budget import DEFAULT_PRICES, Budget, cost_pusd, to_pusd
from autopack.actors._llm import LLM, BudgetExhausted
from autopack.testing import serve_scripted

SONNET = DEFAULT_PRICES["claude-sonnet-4-6"]


def chat(match: str, *, output: int = 400, steps: int = 40) -> dict[str, Any]:
    """A conversation whose every step writes ``output`` tokens."""
    step = {"content": [{"type": "text", "text": "more " * 50}], "usage": {"output_tokens": output}}
    return {"match": match, "steps": [step] * steps}


def llm_for(url: str, **kw: Any) -> LLM:
    kw.setdefault("min_output_tokens", 100)
    return LLM(base_url=url, api_key="test-key", timeout_s=5, retry_base_s=0.02, **kw)


async def spend_until_refused(llm: LLM, budget: Budget | None, run_id: str, *,
                              max_tokens: int = 2000) -> tuple[int, BudgetExhausted]:
    """A growing conversation (each turn resends the whole history) until a call is refused."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"talk {run_id} " + "x" * 3000}]
    for turn in range(100):
        try:
            message, _ = await llm.create(system="You talk.", messages=messages, role="builder",
                                          run_id=run_id, budget=budget, max_tokens=max_tokens)
        except BudgetExhausted as exc:
            return turn, exc
        messages += [{"role": "assistant", "content": message.content[0].text},
                     {"role": "user", "content": "go on " + "y" * 2000}]
    raise AssertionError("never refused")


def served_cost(stats: dict[str, Any]) -> int:
    t = stats["usage_totals"]
    return cost_pusd(SONNET, input_tokens=t["input_tokens"], output_tokens=t["output_tokens"],
                     cache_write=t["cache_creation_input_tokens"],
                     cache_read=t["cache_read_input_tokens"])


async def test_run_token_budget_never_passed_and_max_tokens_shrinks() -> None:
    async with serve_scripted([chat("talk run-1", output=400)]) as server:
        async with llm_for(server.url) as llm:
            budget = Budget(token_limit=12_000)
            turns, exc = await spend_until_refused(llm, budget, "run-1")
            stats = llm.statistics()
        served = server.stats()
        asked = [body["max_tokens"] for body in server.requests]
    assert turns >= 2
    assert exc.reason == "token_budget"
    assert exc.refusal is not None
    assert (exc.refusal.scope, exc.refusal.unit) == ("run", "tokens")
    assert exc.refusal.spent + exc.refusal.needed > 12_000  # that call could have overshot
    total = sum(served["usage_totals"].values())
    assert total == budget.tokens_used <= 12_000  # not a single token over
    assert min(asked) < 2000  # a call went out with max_tokens shrunk to fit
    assert stats.shrunk >= 1
    assert stats.refused == 1
    # every call was counted first; the refused one was counted and never sent
    assert stats.token_counts + stats.token_estimates == len(server.requests) + 1
    assert stats.token_counts >= len(server.requests)


async def test_run_usd_budget_never_passed() -> None:
    async with serve_scripted([chat("talk run-2", output=300)]) as server:
        async with llm_for(server.url) as llm:
            budget = Budget(usd_limit=0.05)
            _, exc = await spend_until_refused(llm, budget, "run-2")
        served = server.stats()
    assert exc.reason == "usd_budget"
    assert exc.refusal is not None
    assert exc.refusal.scope == "run"
    assert served_cost(served) == budget.run.spent_pusd <= to_pusd(0.05)
    assert budget.run.spent_pusd > to_pusd(0.05) * 0.5  # most of it could be spent


async def test_phase_budget_ends_before_the_run_budget() -> None:
    async with serve_scripted([chat("talk run-3")]) as server:
        async with llm_for(server.url) as llm:
            budget = Budget(token_limit=1_000_000, phase_token_limit=9_000, tokens_used=500_000,
                            phase_tokens_used=1_000)
            _, exc = await spend_until_refused(llm, budget, "run-3")
        served = sum(server.stats()["usage_totals"].values())
    assert exc.refusal is not None
    assert exc.refusal.scope == "phase"
    assert budget.phase.spent_tokens == 1_000 + served <= 9_000


async def test_daily_budget_holds_across_concurrent_runs() -> None:
    async def earlier(since: float) -> tuple[int, int]:
        return 0, to_pusd(0.01)  # spent today before this daemon started

    scripts = [chat(f"talk day-{i}", output=500) for i in range(3)]
    refusals: list[BudgetExhausted] = []
    async with serve_scripted(scripts) as server:
        async with llm_for(server.url, daily_usd_budget=0.06, daily_spent=earlier) as llm:

            async def one(i: int) -> None:
                _, exc = await spend_until_refused(llm, Budget(), f"day-{i}")
                refusals.append(exc)

            async with trio.open_nursery() as nursery:
                for i in range(3):
                    nursery.start_soon(one, i)
        served = server.stats()
    assert [r.refusal.scope for r in refusals if r.refusal] == ["daily"] * 3
    assert to_pusd(0.01) + served_cost(served) <= to_pusd(0.06)
    assert served["requests"] >= 3


async def test_local_estimate_when_count_tokens_is_missing() -> None:
    scenario = {"count_tokens": False, "scripts": [chat("talk run-4", output=300)]}
    async with serve_scripted(scenario) as server:
        async with llm_for(server.url) as llm:
            budget = Budget(token_limit=30_000)
            _, exc = await spend_until_refused(llm, budget, "run-4")
            stats = llm.statistics()
        served = server.stats()
    assert stats.token_counts == 0
    assert stats.token_estimates == served["requests"] + 1
    assert exc.refusal is not None
    # the estimate is conservative: it refuses earlier than a count would, never later
    assert sum(served["usage_totals"].values()) == budget.tokens_used <= 30_000


async def test_no_budget_no_count_request() -> None:
    async with serve_scripted([chat("talk run-5")]) as server:
        async with llm_for(server.url) as llm:
            await llm.create(system="s", messages=[{"role": "user", "content": "talk run-5"}],
                             role="builder", run_id="run-5")
        assert server.stats()["token_counts"] == 0


@pytest.mark.parametrize("limit", [pytest.param(800, id="input-alone-too-big")])
async def test_first_call_refused_makes_no_request(limit: int) -> None:
    async with serve_scripted([chat("talk run-6")]) as server:
        async with llm_for(server.url) as llm:
            turns, exc = await spend_until_refused(llm, Budget(token_limit=limit), "run-6")
        assert server.stats()["requests"] == 0
    assert turns == 0
    assert "run budget exhausted: 0 of 800 tokens spent" in str(exc)


# ---------------------------------------------------------------- what a person sees
def test_exhausted_budget_shows_its_figures_in_status_json_and_report(daemon_factory,
                                                                      tmp_path) -> None:
    """A run ended by its dollar budget: ``status`` (human and ``--json``) and the report
    (JSON and Markdown) show the limit, what was spent and the refused call's worst case."""
    import json

    from autopack.testing import ScriptedServer

    from tests.conftest import make_repo, write_spec

    step = {"content": [{"type": "tool_use", "name": "bash", "input": {"command": "seq 1 3000"}}],
            "usage": {"output_tokens": 400}}
    server = ScriptedServer([{"match": "Carry out phase usd-spender", "steps": [step] * 40}],
                            keep_bodies=False)
    server.start()
    try:
        d = daemon_factory(env={"ANTHROPIC_BASE_URL": server.url,
                                "ANTHROPIC_API_KEY": "sk-ant-test-not-a-real-key-123456"},
                           config={"builder_attempt_wall_s": 60, "min_output_tokens": 100})
        spec = write_spec(tmp_path / "s.json", [{"id": "usd-spender", "goal": "Spend dollars",
                                                 "kind": "build", "checks": ["true"]}],
                          limits={"usd_budget": 0.05})
        repo = make_repo(tmp_path / "repo")
        run_id = json.loads(d.ctl("submit", str(spec), "--repo", str(repo), "--json",
                                  check=True).stdout)["run_id"]
        from tests.conftest import wait_state

        st = wait_state(d, run_id, timeout=120)
        assert st.state == "failed"
        assert st.reason.startswith("budget_exhausted: run budget exhausted: $"), st.reason
        status = json.loads(d.ctl("status", run_id, "--json").stdout)
        report = json.loads(d.ctl("report", run_id, "--json").stdout)
        human = d.ctl("status", run_id).stdout
        markdown = d.ctl("report", run_id).stdout
    finally:
        server.stop()
    budget = status["budget"]
    assert budget == report["budget"]
    assert budget["usd_budget"] == 0.05
    assert budget["token_budget"] == 400_000
    assert 0 < budget["usd_spent"] <= 0.05  # never over
    assert budget["usd_spent"] == pytest.approx(report["cost"]["total_usd"])
    assert budget["tokens_spent"] == status["tokens"] == sum(report["tokens"].values())
    ex = budget["exhausted"]
    assert (ex["scope"], ex["unit"], ex["role"], ex["phase"]) == ("run", "usd", "builder",
                                                                  "usd-spender")
    assert ex["limit"] == 0.05
    assert ex["spent"] == pytest.approx(budget["usd_spent"])
    assert ex["spent"] + ex["needed"] > 0.05  # the refused call could have overshot
    line = next(ln for ln in human.splitlines() if ln.strip().startswith("budget:"))
    assert "of $0.0500" in line, line
    assert "EXHAUSTED: run budget (usd)" in line, line
    assert f"the next call needed up to ${ex['needed']:.4f}" in line
    assert "- **Budget:** " in markdown
    assert "EXHAUSTED: run budget (usd)" in markdown


async def test_a_long_haiku_5_5_prompt_is_budgeted_and_billed_at_its_long_row() -> None:
    """Haiku 5.5 costs 5x for prompts over 100k tokens: a budget that the short row would
    allow refuses the call, and a call that goes is charged at the long row."""
    from autopack.actors._budget import LONG_PROMPT_PRICES

    _, long_row = LONG_PROMPT_PRICES["claude-haiku-5-5"]
    big = "word " * 90_000  # ~112k tokens here (x1.3: Haiku 5.5's newer tokenizer)
    async with serve_scripted([chat("long haiku", output=100)]) as server:
        async with llm_for(server.url, model="claude-haiku-5-5") as llm:
            messages = [{"role": "user", "content": "long haiku " + big}]
            counted = await llm.count_input_tokens({"model": "claude-haiku-5-5", "system": "s",
                                                    "messages": messages})
            assert counted > 100_000
            short_worst = counted * 0.125 + 1000 * 0.50  # $ per Mtok x tokens, the short row
            with pytest.raises(BudgetExhausted):  # fits the short row, not the long one
                await llm.create(system="s", messages=messages, role="builder", run_id="h",
                                 budget=Budget(usd_limit=short_worst * 1.5 / 1e6),
                                 max_tokens=1000)
            assert not server.requests
            _, usage = await llm.create(system="s", messages=messages, role="builder",
                                        run_id="h", max_tokens=1000)
    assert usage.cost_pusd == cost_pusd(long_row, input_tokens=usage.input_tokens,
                                        output_tokens=usage.output_tokens,
                                        cache_write=usage.cache_creation_input_tokens,
                                        cache_read=usage.cache_read_input_tokens)

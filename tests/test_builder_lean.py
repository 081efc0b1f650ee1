"""Fewer tokens per attempt: evidence instead of the raw log in retry prompts, old tool
results pruned without breaking the conversation, a prefix that the prompt cache hits.

Pure helpers are tested with tables; the Builder itself runs through the real SDK
against the scripted server, whose token figures derive from each request."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from autopack.actors._budget import DEFAULT_PRICES, cost_pusd
from autopack.actors._builder import (
    CLEARED,
    MINIMAL_EDIT,
    evidence_excerpt,
    prune_tool_results,
    retry_class,
    retry_model,
    retry_text,
    run_builder,
)
from autopack.actors._llm import LLM, RetryPolicy
from autopack.actors.classifier import classify
from autopack.protocol import Classification, ClassifyContext, PhaseSpec
from autopack.testing import TokenModel, serve_scripted

from tests.conftest import make_repo

FAILURES = Path(__file__).parent / "fixtures" / "failures"
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
PHASE = PhaseSpec(id="lean", goal="Make the tests pass", scope=["src/**"], checks=["pytest -q"])


# ---------------------------------------------------------------- evidence
def captured(name: str) -> tuple[str, Classification]:
    """A log captured from the real tool (command in manifest.toml) and its classification."""
    text = (FAILURES / f"{name}.log").read_text()
    return text, classify(text, 1, ClassifyContext(command="pytest -q"))


@pytest.mark.parametrize("name", ["tf_pytest_assert", "pmd_pytest_collect_sklearn",
                                  "ce_gcc_types", "pse_pytest_collect"])
def test_evidence_keeps_matched_lines_with_bounded_context(name: str) -> None:
    text, c = captured(name)
    assert c.pattern is not None
    assert c.evidence
    noise = "".join(f"collected line {i} of noise that says nothing\n" for i in range(2000))
    long_log = noise + text + noise  # the same failure buried in a long output
    excerpt = evidence_excerpt(long_log, c.evidence)
    for line in c.evidence:
        assert line.strip() in excerpt
    assert len(excerpt.encode()) <= 1500
    assert excerpt.count("of noise") <= 2 * 2 * len(c.evidence)  # two lines either side at most


@pytest.mark.parametrize(
    ("output", "evidence", "expected"),
    [
        pytest.param("a\nb\nc\nd\ne\nf\ng\nh\ni", ["e"], "c\nd\ne\nf\ng", id="two-either-side"),
        pytest.param("a\nb\nc\nd\ne\nf\ng\nh\ni", ["b", "c"], "a\nb\nc\nd\ne", id="windows-merge"),
        pytest.param("a\nb\nc\nd\ne\nf\ng\nh\ni", ["a", "i"], "a\nb\nc\n...\ng\nh\ni", id="gap"),
        pytest.param("a\nb", ["not there"], "not there", id="evidence-not-in-output"),
        pytest.param("a\nb", [], "", id="no-evidence"),
    ],
)
def test_evidence_windows(output: str, evidence: list[str], expected: str) -> None:
    assert evidence_excerpt(output, evidence) == expected


def test_retry_text_has_pattern_evidence_and_hint() -> None:
    text = retry_text(previous=Classification(pattern="test_failure"), evidence="E   assert 3 == 2",
                      retry_hint="fix inc()")
    assert text.splitlines()[0] == "The previous attempt at this phase failed (test_failure)."
    assert "E   assert 3 == 2" in text
    assert text.endswith("Hint: fix inc()")
    assert retry_text(previous=None, evidence=None, retry_hint=None) == ""


# ---------------------------------------------------------------- pruning (pure)
def conversation(turns: int, size: int) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "Carry out phase x (attempt 1): go"}]
    for t in range(turns):
        msgs.append({"role": "assistant", "content": [
            {"type": "text", "text": f"turn {t}"},
            {"type": "tool_use", "id": f"tu{t}a", "name": "bash", "input": {"command": "ls"}},
            {"type": "tool_use", "id": f"tu{t}b", "name": "bash", "input": {"command": "ls"}}]})
        msgs.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"tu{t}a", "content": "x" * size},
            {"type": "tool_result", "tool_use_id": f"tu{t}b", "content": "y" * size,
             "is_error": True}]})
    return msgs


def assert_valid(messages: list[dict[str, Any]]) -> None:
    """Every tool_use is answered by a tool_result with its id in the next message."""
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or not isinstance(m["content"], list):
            continue
        uses = [b["id"] for b in m["content"] if b.get("type") == "tool_use"]
        if not uses:
            continue
        answer = messages[i + 1]
        assert answer["role"] == "user"
        results = [b["tool_use_id"] for b in answer["content"] if b.get("type") == "tool_result"]
        assert results == uses


@pytest.mark.parametrize(
    ("turns", "size", "keep", "trigger", "cleared_turns"),
    [
        pytest.param(3, 1000, 3, 100, 0, id="nothing-older-than-keep"),
        pytest.param(6, 1000, 3, 20_000, 0, id="under-trigger"),
        pytest.param(6, 5000, 3, 20_000, 3, id="over-trigger"),
        pytest.param(6, 5000, 0, 20_000, 6, id="keep-none"),
    ],
)
def test_prune_clears_old_results_and_keeps_pairs(turns: int, size: int, keep: int,
                                                  trigger: int, cleared_turns: int) -> None:
    msgs = conversation(turns, size)
    before = [dict(m) for m in msgs]
    cleared = prune_tool_results(msgs, keep=keep, trigger_bytes=trigger)
    assert cleared == cleared_turns * 2 * size
    assert_valid(msgs)
    results = [b for m in msgs[2::2] for b in m["content"]]
    gone = [b for b in results if b["content"].startswith("[output cleared")]
    assert len(gone) == cleared_turns * 2
    assert all(b["content"] == CLEARED.format(n=size) for b in gone)
    assert [b.get("is_error") for b in results] == [None, True] * turns  # flags kept
    assert [m["role"] for m in msgs] == [m["role"] for m in before]
    marked = [b for m in msgs for b in (m["content"] if isinstance(m["content"], list) else [])
              if "cache_control" in b]
    # the newest cleared result is a cache breakpoint (one, never more)
    assert len(marked) == (1 if cleared_turns else 0)
    # a second pass right after clears nothing more
    assert prune_tool_results(msgs, keep=keep, trigger_bytes=trigger) == 0


def test_prune_moves_its_breakpoint_as_the_conversation_grows() -> None:
    msgs = conversation(6, 5000)
    prune_tool_results(msgs, keep=2, trigger_bytes=20_000)
    msgs += conversation(7, 5000)[-2:]  # one more turn
    assert prune_tool_results(msgs, keep=2, trigger_bytes=20_000) == 2 * 5000
    assert_valid(msgs)
    marked = [i for i, m in enumerate(msgs) if isinstance(m["content"], list)
              and any("cache_control" in b for b in m["content"])]
    assert marked == [len(msgs) - 5]  # the last cleared message, two turns back


# ---------------------------------------------------------------- the Builder, scripted
def llm_for(url: str) -> LLM:
    return LLM(base_url=url, api_key="test-key", timeout_s=10, retry_base_s=0.02)


def chatty(match: str, turns: int) -> dict[str, Any]:
    """Each turn prints ~39 KB (seq 1 7000 twice, so one turn is more than the trigger)."""
    step = {"content": [{"type": "tool_use", "name": "bash", "input": {"command": "seq 1 7000"}},
                        {"type": "tool_use", "name": "bash", "input": {"command": "seq 2 7000"}}],
            "usage": {"output_tokens": 60}}
    return {"match": match, "steps": [step] * turns + [
        {"content": [{"type": "text", "text": "Done."}], "usage": {"output_tokens": 20}}]}


async def attempt(url: str, wt: Path, **kw: Any) -> Any:
    async with llm_for(url) as llm:
        return await run_builder(llm, worktree=wt, env=ENV, run_id=kw.pop("run_id"), phase=PHASE,
                                 context_text="Goal: keep the tests green.", max_turns=20,
                                 wall_s=60, token_limit=None, **kw)


def breakpoints(body: dict[str, Any]) -> int:
    blocks = [*body.get("tools", []), *body.get("system", [])]
    for m in body["messages"]:
        blocks += m["content"] if isinstance(m["content"], list) else []
    return sum(1 for b in blocks if "cache_control" in b)


@pytest.mark.parametrize("prune", [pytest.param("ours", id="ours"), pytest.param("api", id="api"),
                                   pytest.param(False, id="whole")])
async def test_long_conversation_stays_valid_and_clearing_saves_tokens(tmp_path: Path,
                                                                       prune: Any) -> None:
    wt = make_repo(tmp_path / "wt")
    async with serve_scripted([chatty("Carry out phase lean", 10)]) as server:
        result = await attempt(server.url, wt, run_id="r-prune", retry_hint=None, lean=True,
                               prune=prune)
        bodies = server.requests
        served = server.stats()["usage_totals"]
    assert result.stop_reason == "end_turn"
    assert result.turns == 11
    for body in bodies:
        assert_valid(body["messages"])
        assert breakpoints(body) <= 4  # the API refuses more
    cleared = sum("[output cleared" in str(b["messages"]) for b in bodies)
    assert (cleared > 0) == (prune == "ours")
    assert any("context_management" in b for b in bodies) == (prune == "api")
    FIGURES[str(prune)] = sum(served.values()) - served["output_tokens"]  # prompt tokens
    if len(FIGURES) == 3:
        assert FIGURES["ours"] < FIGURES["False"] * 0.5
        assert FIGURES["api"] < FIGURES["False"] * 0.5


FIGURES: dict[str, int] = {}


async def test_retry_carries_evidence_not_the_raw_tail_and_reads_the_cache(tmp_path: Path) -> None:
    wt = make_repo(tmp_path / "wt")
    text, c = captured("tf_pytest_assert")
    raw = "".join(f"noise {i}\n" for i in range(300)) + text  # the tail the baseline would send
    evidence = evidence_excerpt(raw, c.evidence)
    scripts = [{"match": f"Carry out phase lean (attempt {n})", "steps": [
        {"content": [{"type": "tool_use", "name": "bash", "input": {"command": "true"}}],
         "usage": {"output_tokens": 40}},
        {"content": [{"type": "text", "text": "Done."}], "usage": {"output_tokens": 10}}]}
        for n in (1, 2)]
    async with serve_scripted(scripts) as server:
        await attempt(server.url, wt, run_id="r-retry", retry_hint=None, lean=True)
        first_bodies = len(server.requests)
        await attempt(server.url, wt, run_id="r-retry", retry_hint="fix inc()", lean=True,
                      previous=c, evidence=evidence, attempt=2)
        bodies = server.requests
    one, two = bodies[0], bodies[first_bodies]
    assert one["system"] == two["system"]  # the cached prefix is the same for every attempt
    user = two["messages"][0]["content"][-1]["text"]
    assert user.startswith("Carry out phase lean (attempt 2): Make the tests pass")
    assert "(test_failure)" in user
    assert "Hint: fix inc()" in user
    for line in c.evidence:
        assert line in user
    assert "noise 1\n" not in user
    assert "noise 150" not in user
    assert "failed" not in str(two["system"])  # nothing of the retry in the system prompt


async def test_every_call_after_the_first_reads_the_prefix_from_the_cache(tmp_path: Path) -> None:
    wt = make_repo(tmp_path / "wt")
    scripts = [{"match": f"Carry out phase lean (attempt {n})", "steps": [
        {"content": [{"type": "tool_use", "name": "bash", "input": {"command": "echo hi"}}],
         "usage": {"output_tokens": 40}},
        {"content": [{"type": "tool_use", "name": "bash", "input": {"command": "echo ho"}}],
         "usage": {"output_tokens": 40}},
        {"content": [{"type": "text", "text": "Done."}], "usage": {"output_tokens": 10}}]}
        for n in (1, 2)]
    async with serve_scripted(scripts) as server:
        one = await attempt(server.url, wt, run_id="r-cache", retry_hint=None, lean=True)
        two = await attempt(server.url, wt, run_id="r-cache", retry_hint="again", lean=True,
                            previous=Classification(pattern="test_failure"), attempt=2)
    calls = [*one.usage, *two.usage]
    assert calls[0].cache_read_input_tokens == 0
    assert calls[0].cache_creation_input_tokens > 0
    assert all(u.cache_read_input_tokens > 0 for u in calls[1:])
    # the retry's first call reads the tools + system prefix written by attempt 1 (all of
    # the first call's write but its first user message, which differs per attempt)
    assert 1024 <= two.usage[0].cache_read_input_tokens < calls[0].cache_creation_input_tokens


# ---------------------------------------------------------------- retries the classifier named
PRECISE = Classification(pattern="python_syntax_error", evidence=["  File \"src/m.py\", line 3"],
                         details={"file": "src/m.py", "line": 3})
NAMED = Classification(pattern="test_failure", evidence=["FAILED test_inc.py::test_inc"])


@pytest.mark.parametrize(
    ("previous", "hint", "expected"),
    [
        pytest.param(PRECISE, "fix the indent", "precise", id="file-line-and-hint"),
        pytest.param(NAMED, "fix inc()", "named", id="pattern-and-hint"),
        pytest.param(PRECISE, None, None, id="no-hint"),
        pytest.param(Classification(pattern=None), "the Doctor's hint", None, id="doctor"),
        pytest.param(None, None, None, id="first-attempt"),
        pytest.param(Classification(pattern="compile_error", details={"file": "main.c"}), "fix",
                     "named", id="file-without-line"),
    ],
)
def test_retry_class(previous: Classification | None, hint: str | None, expected: str | None) -> None:
    assert retry_class(previous, hint) == expected


@pytest.mark.parametrize(
    ("policy", "kind", "expected"),
    [
        pytest.param(RetryPolicy(), "precise", None, id="off-by-default"),
        pytest.param(RetryPolicy(model="claude-haiku-5-5"), "precise", "claude-haiku-5-5",
                     id="cheap-precise"),
        pytest.param(RetryPolicy(model="claude-haiku-5-5"), "named", None, id="cheap-precise-only"),
        pytest.param(RetryPolicy(model="claude-haiku-5-5", model_on="named"), "named",
                     "claude-haiku-5-5", id="cheap-named"),
        pytest.param(RetryPolicy(model="claude-haiku-5-5", model_on="named"), None, None,
                     id="never-on-the-doctors-word"),
    ],
)
def test_retry_model(policy: RetryPolicy, kind: str | None, expected: str | None) -> None:
    assert retry_model(policy, kind) == expected


def two_turns(match: str, first_out: int = 40) -> dict[str, Any]:
    return {"match": match, "steps": [
        {"content": [{"type": "tool_use", "name": "str_replace_based_edit_tool",
                      "input": {"command": "view", "path": "README.md"}}],
         "usage": {"output_tokens": first_out}},
        {"content": [{"type": "text", "text": "Done."}], "usage": {"output_tokens": 10}}]}


async def test_precise_retry_asks_for_the_minimal_edit(tmp_path: Path) -> None:
    wt = make_repo(tmp_path / "wt")
    async with serve_scripted([two_turns("Carry out phase lean (attempt 2)")]) as server:
        precise = await attempt(server.url, wt, run_id="r-precise", retry_hint="fix the indent",
                                lean=True, previous=PRECISE, evidence="line 3", attempt=2)
        n = len(server.requests)
        named = await attempt(server.url, wt, run_id="r-named", retry_hint="fix inc()",
                              lean=True, previous=NAMED, evidence="FAILED", attempt=2)
        bodies = server.requests
    assert precise.stop_reason == named.stop_reason == "end_turn"
    for body in bodies[:n]:
        assert MINIMAL_EDIT in str(body["messages"][0]["content"])
        assert body["model"] == "claude-sonnet-4-6"  # no retry model configured
        assert MINIMAL_EDIT not in str(body["system"])  # the cached prefix is unchanged
    for body in bodies[n:]:  # a retry without a file and line is not told so
        assert MINIMAL_EDIT not in str(body["messages"][0])


async def test_cheap_retry_model_is_used_priced_and_cached_apart(tmp_path: Path) -> None:
    wt = make_repo(tmp_path / "wt")
    scripts = [two_turns(f"Carry out phase lean (attempt {n})") for n in (1, 2)]
    policy = RetryPolicy(model="claude-haiku-5-5")
    async with serve_scripted(scripts) as server:
        one = await attempt(server.url, wt, run_id="r-cheap", retry_hint=None, lean=True,
                            retry_policy=policy)
        two = await attempt(server.url, wt, run_id="r-cheap", retry_hint="fix the indent",
                            lean=True, previous=PRECISE, evidence="line 3", attempt=2,
                            retry_policy=policy)
        bodies = server.requests
    assert {b["model"] for b in bodies[:2]} == {"claude-sonnet-4-6"}
    assert {b["model"] for b in bodies[2:]} == {"claude-haiku-5-5"}
    assert {u.model for u in one.usage} == {"claude-sonnet-4-6"}
    assert {u.model for u in two.usage} == {"claude-haiku-5-5"}
    # a prefix cached for Sonnet is not read by Haiku: its first call writes it again
    assert two.usage[0].cache_read_input_tokens == 0
    assert two.usage[0].cache_creation_input_tokens > 0
    # the newer tokenizer: the same scripted output is 1.3x the tokens
    assert [u.output_tokens for u in two.usage] == [52, 13]
    for u in two.usage:  # priced at Haiku 5.5's own row
        assert u.cost_pusd == cost_pusd(DEFAULT_PRICES["claude-haiku-5-5"],
                                        input_tokens=u.input_tokens, output_tokens=u.output_tokens,
                                        cache_write=u.cache_creation_input_tokens,
                                        cache_read=u.cache_read_input_tokens)


@pytest.mark.parametrize(
    ("model", "factor"),
    [pytest.param("claude-sonnet-4-6", 1.0, id="sonnet-4-6"),
     pytest.param("claude-haiku-4-5", 1.0, id="haiku-4-5"),
     pytest.param("claude-opus-4-7", 1.3, id="opus-4-7"),
     pytest.param("claude-haiku-5-5", 1.3, id="haiku-5-5"),
     pytest.param("claude-sonnet-5-5", 1.3, id="sonnet-5-5")],
)
def test_server_counts_newer_tokenizer_models_higher(model: str, factor: float) -> None:
    body = {"model": model, "system": "x" * 4000, "messages": [{"role": "user", "content": "hi"}]}
    plain = TokenModel().count({**body, "model": "claude-sonnet-4-6"})
    assert TokenModel().count(body) == pytest.approx(plain * factor, abs=3)

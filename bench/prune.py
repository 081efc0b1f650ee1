"""Clearing old tool results from long Builder conversations, measured both ways.

Usage::

    .venv/bin/python bench/prune.py [--turns 12] [--json]

One scripted Builder attempt (the real ``anthropic`` SDK against the scripted
Messages API server, whose input tokens, cache writes and cache reads derive
from each request) where every turn runs two real commands printing ~39 KB
(``seq 1 7000``, ``seq 2 7000``), three ways on the same script:

- ``off``: the whole conversation is sent every turn (the peer);
- ``ours``: :func:`autopack.actors._builder.prune_tool_results` clears old tool
  results in batches on our side (every ``tool_use`` keeps its ``tool_result``);
- ``api``: the API's context editing (``clear_tool_uses_20250919``) with the
  same keep/trigger, applied by the server as documented.

Prints prompt tokens (input + cache writes + cache reads), output tokens and
dollars per variant (claude-sonnet-4-6 prices), and each variant's ratio to
``off`` measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio
from autopack.actors._budget import DEFAULT_PRICES, cost_pusd, usd
from autopack.actors._builder import run_builder
from autopack.actors._llm import LLM
from autopack.protocol import PhaseSpec
from autopack.testing import serve_scripted

PHASE = PhaseSpec(id="long", goal="Explore the numbers", scope=["src/**"], checks=["true"])


def script(turns: int) -> list[dict[str, Any]]:
    step = {"content": [{"type": "tool_use", "name": "bash", "input": {"command": "seq 1 7000"}},
                        {"type": "tool_use", "name": "bash", "input": {"command": "seq 2 7000"}}],
            "usage": {"output_tokens": 120}}
    return [{"match": "Carry out phase long", "steps": [step] * turns + [
        {"content": [{"type": "text", "text": "Done."}], "usage": {"output_tokens": 20}}]}]


async def variant(prune: bool | str, turns: int, repo: Path) -> dict[str, Any]:
    async with serve_scripted(script(turns)) as server:
        async with LLM(base_url=server.url, api_key="bench", timeout_s=30) as llm:
            result = await run_builder(
                llm, worktree=repo, env={"PATH": os.environ["PATH"]}, run_id=f"prune-{prune}",
                phase=PHASE, context_text="", retry_hint=None, max_turns=turns + 2, wall_s=120,
                token_limit=None, lean=True, prune=prune)
        totals = server.stats()["usage_totals"]
    price = DEFAULT_PRICES["claude-sonnet-4-6"]
    pusd = cost_pusd(price, input_tokens=totals["input_tokens"],
                     output_tokens=totals["output_tokens"],
                     cache_write=totals["cache_creation_input_tokens"],
                     cache_read=totals["cache_read_input_tokens"])
    prompt = (totals["input_tokens"] + totals["cache_creation_input_tokens"]
              + totals["cache_read_input_tokens"])
    return {"turns": result.turns, "stop_reason": result.stop_reason, "prompt_tokens": prompt,
            "output_tokens": totals["output_tokens"], "usd": usd(pusd), **totals}


async def measure(turns: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        await trio.run_process(["git", "init", "-q", str(repo)])
        for name in ("off", "ours", "api"):
            out[name] = await variant({"off": False, "ours": "ours", "api": "api"}[name], turns, repo)
    for name in ("ours", "api"):
        out[name]["prompt_ratio_to_off"] = round(out[name]["prompt_tokens"] / out["off"]["prompt_tokens"], 3)
        out[name]["usd_ratio_to_off"] = round(out[name]["usd"] / out["off"]["usd"], 3)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--turns", type=int, default=12)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = trio.run(measure, args.turns)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.turns} Builder turns, each printing ~39 KB; ratios are to 'off' in this run")
    print("| variant | prompt tokens | cache read | cache write | input | dollars | prompt vs off | $ vs off |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in result.items():
        print(f"| {name} | {r['prompt_tokens']:,} | {r['cache_read_input_tokens']:,} | "
              f"{r['cache_creation_input_tokens']:,} | {r['input_tokens']:,} | ${r['usd']:.4f} | "
              f"{r.get('prompt_ratio_to_off', 1.0)} | {r.get('usd_ratio_to_off', 1.0)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The scripted model server: routing, conversations, streaming, statistics, process mode."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from autopack.actors._llm import LLM, LLMRequestError
from autopack.testing import ScriptedServer, load_scenario, serve_scripted

SCENARIOS = Path(__file__).resolve().parent.parent / "actors" / "testing" / "scenarios"


def llm_for(url: str) -> LLM:
    return LLM(base_url=url, api_key="test-key", timeout_s=5, retry_base_s=0.02)


async def ask(llm: LLM, text: str, run_id: str | None = None,
              history: list[dict[str, Any]] | None = None) -> Any:
    messages = [{"role": "user", "content": text}, *(history or [])]
    message, _ = await llm.create(system="s", messages=messages, role="builder", run_id=run_id)
    return message


@pytest.mark.parametrize(
    ("scenario", "problem"),
    [
        pytest.param({"nope": []}, "scripts", id="no-scripts"),
        pytest.param([{"steps": []}], "match", id="script-without-match"),
        pytest.param([{"match": "x", "steps": {}}], "steps", id="steps-not-a-list"),
    ],
)
def test_bad_scenarios_are_rejected(scenario: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        load_scenario(scenario)


def test_shipped_scenarios_load() -> None:
    files = sorted(SCENARIOS.glob("*.json"))
    assert files
    for path in files:
        assert load_scenario(path)["scripts"]


async def test_steps_follow_the_conversation_and_errors_are_per_conversation() -> None:
    scenario = [{"match": "task", "steps": [
        {"errors": [{"status": 500}], "content": [{"type": "text", "text": "step0"}]},
        {"content": [{"type": "text", "text": "step1"}]}]}]
    async with serve_scripted(scenario) as server:
        async with llm_for(server.url) as llm:
            for run in ("a", "b"):  # each conversation meets its own scripted 500 first
                assert (await ask(llm, "task", run)).content[0].text == "step0"
            history = [{"role": "assistant", "content": "step0"}, {"role": "user", "content": "go"}]
            assert (await ask(llm, "task", "a", history)).content[0].text == "step1"
            history += [{"role": "assistant", "content": "step1"}, {"role": "user", "content": "go"}]
            assert (await ask(llm, "task", "a", history)).content[0].text == "(script exhausted)"
            with pytest.raises(LLMRequestError, match="no script matches"):
                await ask(llm, "something else")
        stats = server.stats()
    assert stats["by_status"] == {"500": 2, "200": 4, "400": 1}
    assert stats["unscripted"] == 1
    assert stats["by_script"] == {"task": 6}


async def test_streaming_through_the_sdk() -> None:
    import anthropic

    scenario = [{"match": "stream me", "steps": [{"content": [
        {"type": "text", "text": "part one"},
        {"type": "tool_use", "name": "bash", "input": {"command": "ls -la"}}],
        "usage": {"input_tokens": 12, "output_tokens": 34}}]}]
    async with serve_scripted(scenario) as server:
        client = anthropic.AsyncAnthropic(api_key="k", base_url=server.url, max_retries=0)
        try:
            async with client.messages.stream(
                    model="claude-sonnet-4-6", max_tokens=100,
                    messages=[{"role": "user", "content": "stream me"}]) as stream:
                message = await stream.get_final_message()
        finally:
            await client.close()
    assert message.content[0].text == "part one"
    assert message.content[1].input == {"command": "ls -la"}
    assert message.stop_reason == "tool_use"
    assert message.usage.output_tokens == 34


def test_process_mode_prints_url_and_serves_stats(tmp_path: Path) -> None:
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps([{"match": "hi", "steps": []}]))
    proc = subprocess.Popen([sys.executable, "-m", "autopack.testing",
                             "--scenario", str(scenario), "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/_stats", timeout=5) as response:
            stats = json.loads(response.read())
        assert stats["requests"] == 0
        assert "usage_totals" in stats
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        proc.stdout.close()  # type: ignore[union-attr]


def test_process_mode_bad_scenario_exits_2(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "autopack.testing",
                             "--scenario", str(tmp_path / "missing.json")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "modelserver:" in result.stderr
    assert "Traceback" not in result.stderr


def test_stop_wakes_a_hanging_handler() -> None:
    server = ScriptedServer([{"match": "x", "steps": [{"errors": [{"hang": 30}]}]}])
    url = server.start()
    body = json.dumps({"model": "m", "max_tokens": 1, "messages": [{"role": "user",
                                                                    "content": "x"}]}).encode()
    import threading

    def post() -> None:
        request = urllib.request.Request(f"{url}/v1/messages", data=body, method="POST",
                                         headers={"content-type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except OSError:
            pass

    thread = threading.Thread(target=post)
    thread.start()
    for _ in range(500):
        if server.stats()["hangs"]:
            break
        threading.Event().wait(0.01)
    server.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()

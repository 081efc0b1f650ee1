"""A 429 storm across 10 concurrent runs: one shared backoff, bounded requests, all finish."""

from __future__ import annotations

import json
from pathlib import Path

from autopack.protocol import Submit, parse_spec_text

from .conftest import wait_state, write_spec
from .test_build_phases import ModelServer

SCENARIO = Path(__file__).parent / "scenarios" / "storm_daemon.json"


def test_rate_limit_storm_over_ten_runs(daemon_factory, repo, tmp_path):
    model = ModelServer(SCENARIO)
    try:
        d = daemon_factory(env={"ANTHROPIC_BASE_URL": model.url, "ANTHROPIC_API_KEY": "k"},
                           config={"max_concurrent_runs": 10, "llm_max_concurrency": 4})
        spec = parse_spec_text(write_spec(tmp_path / "s.json", [{
            "id": "storm-run", "goal": "write storm.txt", "kind": "build",
            "checks": ["grep -q calm storm.txt"]}]).read_text(), fmt="json")
        with d.client() as c:
            ids = [c.request(Submit(spec=spec, repo=str(repo))).run_id for _ in range(10)]
        for run_id in ids:
            assert wait_state(d, run_id, timeout=120).state == "succeeded"
        stats = model.stats()
        ok, limited = stats["by_status"].get("200", 0), stats["by_status"].get("429", 0)
        assert ok == 20  # two Builder turns per run, each answered once
        # one shared backoff: during the storm at most the in-flight calls hit it per
        # retry-after window, instead of every run hammering on its own schedule
        assert limited <= 4 * 5, stats
        assert stats["max_in_flight"] <= 4
        health = json.loads(d.ctl("health", "--json").stdout)
        assert health["parts"]["llm"] == "ok"  # the breaker closed again
    finally:
        model.stop()

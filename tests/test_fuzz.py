"""The protocol fuzzer (``tests/fuzz_protocol.py``) against a real autopackd: valid request
types with extreme field values; never an ``internal`` answer, and the daemon serves on
after every batch. Bounded for CI: a fixed number of derandomized examples."""

from __future__ import annotations

import json

from .conftest import wait_state, write_spec
from .fuzz_protocol import Probe, run_fuzz

EXAMPLES = 60


def test_protocol_fuzz_never_breaks_the_daemon(daemon_factory, repo, tmp_path):
    d = daemon_factory(config={"max_concurrent_runs": 2})
    spec = write_spec(tmp_path / "s.json", [{"id": "a", "goal": "x", "kind": "command",
                                             "checks": ["echo hello"]}])
    run_id = json.loads(d.ctl("submit", str(spec), "--repo", str(repo), "--json").stdout)["run_id"]
    wait_state(d, run_id)
    probe = Probe(d.socket, lambda: d.proc.poll() is None)
    cases = run_fuzz(probe, str(repo), [run_id, run_id[:8]], examples=EXAMPLES)
    assert cases >= EXAMPLES
    # hostile input was refused at the door, and well-formed requests were answered
    assert probe.codes.get("invalid_request", 0) > 0, probe.codes
    assert probe.codes.get("ok", 0) > 0, probe.codes
    assert "internal" not in probe.codes
    assert "Traceback" not in d.log.read_text()
    assert d.proc.poll() is None

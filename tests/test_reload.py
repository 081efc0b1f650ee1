"""SIGHUP swaps in a new frozen settings snapshot: live settings take effect on a real
daemon without a restart, the others wait for one, and a bad file changes nothing."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

from autopack.daemon._config import LiveSettings, Settings
from autopack.protocol import GetContext, GetHealth, GetStatus

from .conftest import DaemonProc, git, wait_state, write_spec


def _submit(d: DaemonProc, spec: Any, repo: Any) -> str:
    res = d.ctl("submit", str(spec), "--repo", str(repo), "--json")
    assert res.returncode == 0, res.stderr
    return str(json.loads(res.stdout)["run_id"])


def _reload(d: DaemonProc, expect: str, **changes: Any) -> None:
    """Rewrite the daemon's config file with ``changes``, send SIGHUP and wait for the
    log line naming what changed (``expect``)."""
    lines = [ln for ln in d.config_path.read_text().splitlines()
             if ln.split(" = ", 1)[0] not in changes]
    lines += [f"{key} = {json.dumps(value)}" for key, value in changes.items()]
    d.config_path.write_text("\n".join(lines) + "\n")
    before = d.log.read_text().count("reloaded settings:")
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while d.log.read_text().count("reloaded settings:") == before:
        assert time.monotonic() < deadline, "no reload logged"
        time.sleep(0.05)
    last = [ln for ln in d.log.read_text().splitlines() if "reloaded settings:" in ln][-1]
    assert last.endswith(f"reloaded settings: {expect}"), last


def _context_degraded(d: DaemonProc, run_id: str) -> bool:
    with d.client() as c:
        return bool(c.request(GetContext(run_id=run_id)).degraded)


def test_sighup_changes_live_settings_on_a_real_daemon(daemon_factory, repo, tmp_path):
    d = daemon_factory(config={"memory_deadline_ms": 10_000, "ab_fraction": 0.0})
    spec = write_spec(tmp_path / "s.json", [
        {"id": "ok", "goal": "pass", "kind": "command", "checks": ["true"]}])
    first = _submit(d, spec, repo)
    assert wait_state(d, first).state == "succeeded"
    assert wait_state(d, first).arm == "hardened"
    assert not _context_degraded(d, first)

    # memory_deadline_ms (copied once at start before the snapshot) and ab_fraction;
    # max_frame_bytes is not live: a reload leaves it alone
    _reload(d, "ab_fraction, memory_deadline_ms", memory_deadline_ms=0, ab_fraction=1.0,
            max_frame_bytes=4096)
    assert _context_degraded(d, first)  # no answer can come within 0 ms
    second = _submit(d, spec, repo)
    assert wait_state(d, second).arm == "baseline"

    # back, and retention: runs that ended more than ~0.1 s ago lose branch and report
    # at the next run's end
    branch = f"autopack/{first}"
    assert git(repo, "branch", "--list", branch)
    assert (d.state_dir / "reports" / f"{first}.md").exists()
    _reload(d, "ab_fraction, memory_deadline_ms, retention_days", memory_deadline_ms=10_000,
            ab_fraction=0.0, retention_days=0.000001)
    assert not _context_degraded(d, first)
    third = _submit(d, spec, repo)
    assert wait_state(d, third).arm == "hardened"
    deadline = time.monotonic() + 30
    while git(repo, "branch", "--list", branch):
        assert time.monotonic() < deadline, "retention_days did not take effect"
        time.sleep(0.1)
    assert not (d.state_dir / "reports" / f"{first}.md").exists()
    with d.client() as c:
        assert c.request(GetStatus(run_id=first)).state == "succeeded"  # the record stays

    # the memory actor reads enable_intention_context from the snapshot too
    with d.client() as c:
        assert c.request(GetHealth()).parts["memory"] == "ok"
    _reload(d, "enable_intention_context", enable_intention_context=False)
    with d.client() as c:
        assert c.request(GetHealth()).parts["memory"] == "disabled"

    # a bad file is refused whole: nothing changes, the daemon keeps serving
    d.config_path.write_text(d.config_path.read_text() + "ab_fraction = 7.0\n")
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "reload refused" not in d.log.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    fourth = _submit(d, spec, repo)
    assert wait_state(d, fourth).arm == "hardened"
    assert d.stop() == 0


def test_live_settings_swap_whole_snapshots():
    old = Settings(max_concurrent_runs=2, memory_deadline_ms=250, max_frame_bytes=65536)
    live = LiveSettings(old)
    seen: list[Settings] = []
    live.on_swap(seen.append)
    fresh = Settings(max_concurrent_runs=5, memory_deadline_ms=40, max_frame_bytes=4096)
    assert live.swap(fresh) == ["max_concurrent_runs", "memory_deadline_ms"]
    now = live.current
    assert now is not old
    assert seen == [now]
    assert (now.max_concurrent_runs, now.memory_deadline_ms) == (5, 40)
    assert now.max_frame_bytes == 65536  # needs a restart
    assert (old.max_concurrent_runs, old.memory_deadline_ms) == (2, 250)  # a reader's copy holds
    assert live.swap(fresh) == []
    assert seen == [now]


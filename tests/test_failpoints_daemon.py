"""Failpoints in a real autopackd: the classifier crashing under load, memory too slow, and
arming/clearing at run time with autopackctl (issue 14, parts 5 and 6)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .conftest import wait_state, write_spec


def _submit_many(d, tmp_path: Path, repo: Path, n: int, checks: list[str],
                 max_attempts: int = 1) -> list[str]:
    specs = [str(write_spec(tmp_path / f"s{i}-{time.monotonic_ns()}.json",
                            [{"id": "a", "goal": "x", "kind": "command", "checks": checks}],
                            limits={"max_attempts": max_attempts}))
             for i in range(n)]
    res = d.ctl("submit", *specs, "--repo", str(repo), "--json")
    assert res.returncode == 0, res.stderr
    return list(json.loads(res.stdout)["run_ids"])


def test_classifier_panicking_every_third_call_while_20_runs_finish(daemon_factory, repo,
                                                                     tmp_path):
    """Was: one crash closed the classifier's mailbox for good, and the daemon ended in
    SupervisorGaveUp about a second later. Now each crash restarts it with a fresh mailbox;
    the run whose classification it held goes on unclassified."""
    d = daemon_factory(config={"restart_limit": 10, "sandbox": "off"},
                       env={"AUTOPACK_FAILPOINTS": "classifier.classify=every(3)*panic"})
    # exit 127 "not found": classified missing_command, whose hint a command phase cannot use
    runs = _submit_many(d, tmp_path, repo, 20, ["nosuchtool-7f3a --version"])
    reasons = [wait_state(d, r, timeout=120).phases[0].reason or "" for r in runs]
    states = [wait_state(d, r).state for r in runs]
    assert states == ["failed"] * 20  # every run ended
    unclassified = [r for r in reasons if "unclassified" in r]
    classified = [r for r in reasons if "missing_command" in r]
    assert len(unclassified) + len(classified) == 20, reasons
    h = json.loads(d.ctl("health", "--json").stdout)
    child = h["children"]["classifier"]
    crashes = child["restarts"]
    # every third request the actor took crashed it; requests queued behind a crashing one
    # were answered unclassified at once, without being taken (so without counting)
    taken = len(classified) + crashes
    assert crashes == taken // 3 >= 4, (crashes, len(classified), reasons)
    assert len(unclassified) == crashes + (20 - taken)
    assert child["state"] == "up"
    assert "FailpointPanic" in child["last_error"]
    assert h["details"]["classifier"]["restarts"] == crashes
    assert f'autopack_actor_restarts_total{{actor="classifier"}} {crashes}.0' in d.http("/metrics")[1]
    assert 'autopack_actor_up{actor="classifier"} 1.0' in d.http("/metrics")[1]
    assert "giving up" not in d.log.read_text()
    assert d.proc.poll() is None
    # and the classifier still answers after its sixth restart (disarmed: call 21 would panic)
    assert d.ctl("debug", "failpoint", "classifier.classify=off").returncode == 0
    fresh = _submit_many(d, tmp_path, repo, 1, ["nosuchtool-7f3a --version"])
    assert "missing_command" in (wait_state(d, fresh[0]).phases[0].reason or "")


def test_memory_sleeping_past_its_deadline_degrades_but_runs_finish(daemon_factory, repo,
                                                                     tmp_path):
    slow = ";".join(f"memory.{call}=sleep(5s)"
                    for call in ("context_for", "record_intention", "record_outcome"))
    d = daemon_factory(config={"memory_deadline_ms": 200, "sandbox": "off"},
                       env={"AUTOPACK_FAILPOINTS": slow})
    runs = _submit_many(d, tmp_path, repo, 6, ["true"])
    assert [wait_state(d, r, timeout=120).state for r in runs] == ["succeeded"] * 6
    start = time.monotonic()
    ctx = json.loads(d.ctl("context", runs[0], "--json").stdout)
    assert ctx == {"text": "", "bytes": 0, "degraded": True} or ctx["degraded"] is True
    assert time.monotonic() - start < 5  # the deadline, not the sleep
    h = json.loads(d.ctl("health", "--json").stdout)
    assert h["parts"]["memory"] == "degraded", h
    assert "memory" in h["degraded"]
    assert "no answer within 0.2s" in (h["details"]["memory"]["last_error"] or "")
    assert h["ready"]
    assert d.proc.poll() is None


def test_failpoints_armed_listed_and_cleared_at_run_time(daemon, repo):
    def fp(*args: str):
        return daemon.ctl("debug", "failpoint", *args)

    assert json.loads(fp("--list", "--json").stdout) == {"armed": {}, "fired": {}}
    res = fp("request.lessons=1*error", "classifier.classify=every(3)*panic", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["armed"] == {"classifier.classify": "every(3)*panic",
                                               "request.lessons": "1*error"}
    bad = daemon.ctl("lessons", "--repo", str(repo))  # the armed error fires once
    assert bad.returncode == 2
    assert "internal error while handling lessons" in bad.stderr
    assert daemon.ctl("lessons", "--repo", str(repo)).returncode == 0  # spent
    listed = fp("--list")
    assert listed.stdout.strip() == "classifier.classify=every(3)*panic  (fired 0)"
    for args, needle in ((["memory.nosuch=panic"], "unknown failpoint 'memory.nosuch'"),
                         (["classifier.classify=explode"], "unknown action 'explode'"),
                         (["classifier.classify=sleep(5)"], "bad duration"),
                         (["classifier.classify"], "expected NAME=ACTION")):
        res = fp(*args)
        assert res.returncode == 2, res
        assert needle in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
        assert "Traceback" not in res.stderr
    assert json.loads(fp("--json").stdout)["armed"] == {
        "classifier.classify": "every(3)*panic"}  # nothing changed by the refused ones
    assert json.loads(fp("classifier.classify=off", "--json").stdout)["armed"] == {}
    fp("memory.lessons=error")
    assert json.loads(fp("--clear", "--json").stdout) == {"armed": {}, "fired": {}}
    assert fp().stdout.strip() == "no failpoint armed"
    assert daemon.proc.poll() is None


def test_bad_failpoints_at_start_are_one_line_and_exit_2(daemon_factory):
    d = daemon_factory(env={"AUTOPACK_FAILPOINTS": "classifier.classify=sometimes"},
                       start=False)
    d.state_dir.mkdir(parents=True, exist_ok=True)
    import subprocess

    from .conftest import BIN

    res = subprocess.run([str(BIN / "autopackd"), "--config", str(d.config_path)], env=d.env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "unknown action 'sometimes'" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_scheduler_crash_resumes_the_runs_it_was_executing(daemon_factory, repo, tmp_path):
    d = daemon_factory(config={"sandbox": "off"})
    run_id = _submit_many(d, tmp_path, repo, 1, ["sleep 3"], max_attempts=2)[0]
    wait_state(d, run_id, ("running",))
    assert d.ctl("debug", "failpoint", "scheduler.fill=1*panic").returncode == 0
    assert wait_state(d, run_id, timeout=60).state == "succeeded"
    h = json.loads(d.ctl("health", "--json").stdout)
    assert h["children"]["scheduler"]["restarts"] == 1
    assert h["children"]["scheduler"]["state"] == "up"
    assert "FailpointPanic" in h["children"]["scheduler"]["last_error"]
    # a new run still starts
    again = _submit_many(d, tmp_path, repo, 1, ["true"])[0]
    assert wait_state(d, again, timeout=60).state == "succeeded"
    assert d.proc.poll() is None

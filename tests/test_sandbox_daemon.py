"""The sandbox through the real daemon: a scripted Builder whose bash tool tries to escape,
checks that try the same, a daemon killed with -9 while a sandboxed command runs, health,
``sandbox = "off"``, and a machine where bwrap does not work."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from .conftest import git, make_repo, require_system, wait_state, write_spec
from .test_build_phases import events, submit

KEY = "sk-ant-test-sandbox-key-0123456789"


class ModelServer:
    """The scripted Messages API server as a process, on a port chosen beforehand."""

    def __init__(self, scenario: Path, port: int) -> None:
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "autopack.testing", "--scenario", str(scenario),
             "--port", str(port)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        assert self.url == f"http://127.0.0.1:{port}", self.url

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sleeping(tag: int) -> str:
    out = subprocess.run(["pgrep", "-af", f"sleep {tag}"], capture_output=True, text=True).stdout
    return "\n".join(line for line in out.splitlines() if "pgrep" not in line)


def bash_turn(commands: list[str]) -> dict:
    return {"content": [{"type": "tool_use", "name": "bash", "input": {"command": c}}
                        for c in commands],
            "usage": {"input_tokens": 100, "output_tokens": 10}}


def scenario(path: Path, phase: str, commands: list[str]) -> Path:
    path.write_text(json.dumps({"scripts": [{
        "match": f"Carry out phase {phase} (attempt 1)",
        "steps": [bash_turn(commands),
                  {"content": [{"type": "text", "text": "probed"}],
                   "usage": {"input_tokens": 10, "output_tokens": 5}}]}]}))
    return path


def test_builder_bash_escapes_fail_inside_the_run(daemon_factory, tmp_path):
    require_system("bwrap", "bubblewrap")
    repo = make_repo(tmp_path / "repo", {"README.md": "# r\n"})
    health_port = free_port()
    model_port = free_port()
    tag = 2000 + uuid.uuid4().int % 5000
    host_tmp = Path("/tmp") / f"autopack-sbx-{uuid.uuid4().hex}"
    outside = tmp_path / "outside.txt"
    home_outside = Path.home() / f"autopack-sbx-{uuid.uuid4().hex}"
    var_tmp = Path("/var/tmp") / f"autopack-sbx-{uuid.uuid4().hex}"
    state = tmp_path / "state"
    hook = repo / ".git" / "hooks" / "post-commit"
    log = ">> probe.log 2>&1"
    commands = [
        f"echo pwned >> {outside}; echo outside=$? {log}",
        f"echo pwned >> {home_outside}; echo home=$? {log}",
        f"echo pwned >> {var_tmp}; echo vartmp=$? {log}",
        f"echo mine > {host_tmp} && cat {host_tmp} && echo tmp=$? {log}",
        f"cat {state}/autopack.db >/dev/null; echo db=$? {log}; ls {state}/worktrees | wc -l {log}",
        f"python3 -c \"import urllib.request as u; u.urlopen('http://127.0.0.1:{health_port}"
        f"/healthz', timeout=3)\"; echo health=$? {log}",
        f"cat /proc/$PPID/environ /proc/1/environ 2>/dev/null | tr '\\0' '\\n' "
        f"| grep -c ANTHROPIC {log}; env | grep -c ANTHROPIC {log}",
        f"setsid -f sleep {tag}; nohup sleep {tag + 1} >/dev/null 2>&1 & echo bg=$? {log}",
        f"echo 'touch {tmp_path}/hooked' > {hook}; chmod +x {hook}; echo hook=$? {log}",
        f"echo 'touch {tmp_path}/hooked' > $(git rev-parse --git-common-dir)/hooks/post-commit;"
        f" echo hook2=$? {log}",
    ]
    model = ModelServer(scenario(tmp_path / "scenario.json", "probe", commands), port=model_port)
    try:
        d = daemon_factory(env={"ANTHROPIC_BASE_URL": model.url, "ANTHROPIC_API_KEY": KEY},
                           config={"builder_attempt_wall_s": 60,
                                   "health_listen": f"127.0.0.1:{health_port}"})
        assert d.http("/healthz")[1]["sandbox"] == "bwrap"
        spec = write_spec(tmp_path / "s.json", [{
            "id": "probe", "goal": "probe the sandbox", "kind": "build", "checks": ["true"]}])
        run_id = submit(d, spec, repo)
        st = wait_state(d, run_id, timeout=120)
        assert st.state == "succeeded", st  # every attempt failed inside; the run went on
        got = git(repo, "show", f"autopack/{run_id}:probe.log").splitlines()
        # under the host's /tmp, a write lands in the run's private /tmp; elsewhere it fails
        assert "home=1" in got, got
        assert "vartmp=1" in got, got
        assert "tmp=0" in got, got  # it wrote its private /tmp ...
        assert not host_tmp.exists()  # ... not the host's
        assert "db=1" in got, got
        assert got[got.index("db=1") + 1] == "1", got  # only its own worktree
        assert "health=1" in got, got
        assert got.count("0") >= 2, got  # no ANTHROPIC_* in /proc/<daemon>/environ nor env
        assert "bg=0" in got, got
        assert "hook=1" in got, got
        assert "hook2=1" in got, got
        assert not outside.exists()
        assert not home_outside.exists()
        assert not var_tmp.exists()
        assert not hook.exists()
        assert not (tmp_path / "hooked").exists()
        assert sleeping(tag) == ""
        assert sleeping(tag + 1) == ""
        # the key left the daemon's own environment block once read
        environ = Path(f"/proc/{d.proc.pid}/environ").read_bytes()
        assert KEY.encode() not in environ
        kinds = [e["kind"] for e in events(d, run_id)]
        assert "sandbox" in kinds
        report = json.loads(d.ctl("report", run_id, "--json").stdout)
        assert report["sandbox"]["mode"] == "bwrap"
        assert report["sandbox"]["confined"]
        assert report["sandbox"]["network"] == "install"
    finally:
        model.stop()


def test_checks_are_confined_and_network_policy_applies(daemon_factory, tmp_path):
    require_system("bwrap", "bubblewrap")
    repo = make_repo(tmp_path / "repo")
    d = daemon_factory(config={"sandbox_network": "none"})
    health = d.health_url.rsplit(":", 1)[1]
    tag = 2000 + uuid.uuid4().int % 5000
    connect = (f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {health}), "
               f"timeout=3)\"")
    spec = write_spec(tmp_path / "s.json", [{
        "id": "c", "goal": "confined checks", "kind": "command", "checks": [
            f"! echo x > {tmp_path}/from-check.txt || test ! -e {tmp_path}/../from-check.txt",
            f"! cat {d.state_dir}/autopack.db",
            f"! {connect}",
            f"setsid -f sleep {tag}; echo started",
            "test \"$(ps -e -o pid= | wc -l)\" -le 6",
        ]}])
    run_id = submit(d, spec, repo)
    st = wait_state(d, run_id, timeout=90)
    assert st.state == "succeeded", (st, [e for e in events(d, run_id)
                                          if e["kind"] == "check_finished"])
    assert not (tmp_path / "from-check.txt").exists()
    assert sleeping(tag) == ""
    # a spec may open the network for everything
    spec = write_spec(tmp_path / "s2.json", [{
        "id": "c", "goal": "network", "kind": "command", "checks": [connect]}], network="all")
    st = wait_state(d, submit(d, spec, repo), timeout=90)
    assert st.state == "succeeded", st


def test_kill9_leaves_nothing_running_and_restart_resumes(daemon_factory, tmp_path):
    require_system("bwrap", "bubblewrap")
    repo = make_repo(tmp_path / "repo")
    d = daemon_factory()
    tag = 2000 + uuid.uuid4().int % 5000
    check = (f"if [ -e /tmp/second ]; then exit 0; fi; touch /tmp/second; "
             f"setsid -f sleep {tag}; nohup sleep {tag + 1} >/dev/null 2>&1 & sleep {tag + 2}")
    spec = write_spec(tmp_path / "s.json", [{
        "id": "long", "goal": "long", "kind": "command", "checks": [check]}])
    run_id = submit(d, spec, repo)
    deadline = time.monotonic() + 60
    while sleeping(tag + 2) == "" or sleeping(tag) == "":
        assert time.monotonic() < deadline, "the check never started"
        time.sleep(0.1)
    d.kill9()
    deadline = time.monotonic() + 30  # the watcher sees the daemon's pipe close
    while any(sleeping(t) for t in (tag, tag + 1, tag + 2)):
        assert time.monotonic() < deadline, [sleeping(t) for t in (tag, tag + 1, tag + 2)]
        time.sleep(0.1)
    d.start()
    st = wait_state(d, run_id, timeout=90)
    assert st.state == "succeeded", st
    assert all(sleeping(t) == "" for t in (tag, tag + 1, tag + 2))


def test_sandbox_off_is_said_everywhere(daemon_factory, tmp_path, repo):
    d = daemon_factory(config={"sandbox": "off"})
    h = json.loads(d.ctl("health", "--json").stdout)
    assert h["sandbox"] == "off"
    assert "off" in d.ctl("health").stdout
    spec = write_spec(tmp_path / "s.json", [{
        "id": "c", "goal": "c", "kind": "command", "checks": ["ulimit -H -t"]}])
    run_id = submit(d, spec, repo)
    assert wait_state(d, run_id).state == "succeeded"
    assert "UNCONFINED" in d.ctl("status", run_id).stdout
    assert json.loads(d.ctl("status", run_id, "--json").stdout)["sandbox"] == "off"
    assert "UNCONFINED" in d.ctl("report", run_id).stdout
    assert json.loads(d.ctl("report", run_id, "--json").stdout)["sandbox"]["confined"] is False


def test_where_bwrap_fails_build_phases_are_refused(daemon_factory, tmp_path, repo):
    # a bwrap that fails like it does under AppArmor's userns restriction (the real message)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "bwrap").write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2"
                                "\nexit 1\n")
    (fake / "bwrap").chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ['PATH']}", "ANTHROPIC_API_KEY": KEY}
    d = daemon_factory(env=env)
    h = json.loads(d.ctl("health", "--json").stdout)
    assert h["sandbox"] == "unavailable"
    assert "uid map" in h["sandbox_detail"]
    spec = write_spec(tmp_path / "s.json", [{"id": "b", "goal": "b", "kind": "build"}])
    st = wait_state(d, submit(d, spec, repo))
    assert st.state == "failed", st
    assert "sandbox" in st.reason, st
    assert "unavailable" in st.reason, st
    # a daemon told to require it refuses to start, with one clear line
    d2 = daemon_factory("state2", env=env, config={"sandbox": "bwrap"}, start=False)
    with pytest.raises(RuntimeError, match="uid map"):
        d2.start()


def test_hooks_never_run_during_the_daemons_own_git(daemon, tmp_path):
    repo = make_repo(tmp_path / "repo")
    ran = tmp_path / "hook-ran"
    for name in ("post-commit", "pre-commit", "post-checkout", "reference-transaction"):
        hook = repo / ".git" / "hooks" / name
        hook.write_text(f"#!/bin/sh\necho {name} >> {ran}\n")
        hook.chmod(0o755)
    spec = write_spec(tmp_path / "s.json", [{
        "id": "c", "goal": "write and commit", "kind": "command",
        "checks": ["echo made > made.txt"]}])
    run_id = submit(daemon, spec, repo)
    st = wait_state(daemon, run_id)
    assert st.state == "succeeded", st
    assert st.phases[0].commit  # the daemon committed (and checked out, and moved refs) ...
    assert git(repo, "show", f"autopack/{run_id}:made.txt") == "made"
    assert not ran.exists()  # ... and no hook of the repository ran


def test_private_tmp_lives_with_the_run(daemon, tmp_path):
    repo = make_repo(tmp_path / "repo")
    spec = write_spec(tmp_path / "s.json", [{
        "id": "c", "goal": "c", "kind": "command",
        "checks": ["echo kept > /tmp/note", "grep -qx kept /tmp/note"]}])  # across commands
    run_id = submit(daemon, spec, repo)
    assert wait_state(daemon, run_id).state == "succeeded"
    deadline = time.monotonic() + 30  # removed with the run, just after its end state
    while (daemon.state_dir / "tmp" / run_id).exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    daemon.stop()
    stray = daemon.state_dir / "tmp" / "20200101-000000-deadbeef"
    stray.mkdir(parents=True)
    (stray / "left.txt").write_text("x")
    daemon.start()
    assert not stray.exists()  # a dead run's private /tmp is swept at start-up

"""The core daemon through its real socket: submit, concurrency, cancel, kill -9, bad input."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import msgspec
import pytest
from autopack.protocol import (
    ErrorCode,
    GetHealth,
    GetStatus,
    Hello,
    RemoteError,
    Submit,
    encode_frame,
    parse_spec_text,
)

from .conftest import git, raw_connect, read_reply, wait_state, write_spec


def submit(d, spec_path: Path, repo: Path, *extra: str) -> str:
    res = d.ctl("submit", str(spec_path), "--repo", str(repo), "--json", *extra)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[0])["run_id"]


def test_submit_wait_succeeds_with_branch_and_commits(daemon, repo, tmp_path):
    spec = write_spec(tmp_path / "s.json", [
        {"id": "make-file", "goal": "create data", "kind": "command",
         "checks": ["echo hello > data.txt", "grep -q hello data.txt"]},
        {"id": "second", "goal": "append", "kind": "command", "checks": ["echo more >> data.txt"]},
        {"id": "nochange", "goal": "only check", "kind": "command", "checks": ["test -f data.txt"]},
    ])
    run_id = submit(daemon, spec, repo)
    res = daemon.ctl("wait", run_id, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    (status,) = json.loads(res.stdout)["runs"]
    assert status["state"] == "succeeded"
    assert [p["state"] for p in status["phases"]] == ["succeeded"] * 3
    assert set(status) >= {"run_id", "state", "reason", "phases"}
    log = git(repo, "log", "--format=%s", f"autopack/{run_id}").splitlines()
    assert log == ["second: append", "make-file: create data", "initial"]
    assert git(repo, "show", f"autopack/{run_id}:data.txt") == "hello\nmore"
    # the worktree is gone, the branch stays, the user's checkout is untouched
    assert not (daemon.state_dir / "worktrees" / run_id).exists()
    assert not (repo / "data.txt").exists()
    report = json.loads(daemon.ctl("report", run_id, "--json").stdout)
    assert report["tokens"] == {"input": 0, "output": 0, "cache_creation": 0, "cache_read": 0}
    assert [c["exit_code"] for c in report["phases"][0]["checks"]] == [0, 0]
    assert len(report["commits"]) == 2


def test_failing_check_fails_run_with_reason(daemon, repo, tmp_path):
    spec = write_spec(tmp_path / "s.json", [
        {"id": "bad", "goal": "fails", "kind": "command", "checks": ["echo boom >&2; exit 3"]},
        {"id": "never", "goal": "not reached", "kind": "command", "checks": ["true"]},
    ])
    run_id = submit(daemon, spec, repo)
    res = daemon.ctl("wait", run_id)
    assert res.returncode == 1
    st = wait_state(daemon, run_id)
    assert st.state == "failed"
    assert "exit 3" in st.reason
    assert [p.state for p in st.phases] == ["failed", "cancelled"]
    logs = daemon.ctl("logs", run_id)
    assert "boom" in logs.stdout
    assert logs.returncode == 1


def _intervals(daemon, run_ids):
    spans = []
    with daemon.client() as c:
        from autopack.protocol import Follow, LogsEnd

        for run_id in run_ids:
            start = end = None
            for ev in c.stream(Follow(run_id=run_id)):
                if isinstance(ev, LogsEnd):
                    break
                if ev.kind == "run_running":
                    start = ev.ts
                if ev.kind in ("run_succeeded", "run_failed"):
                    end = ev.ts
            spans.append((start, end))
    return spans


def test_concurrency_limit_is_observed(daemon_factory, repo, tmp_path):
    d = daemon_factory(config={"max_concurrent_runs": 2})
    specs = [str(write_spec(tmp_path / f"s{i}.json", [
        {"id": "nap", "goal": "sleep a bit", "kind": "command", "checks": ["sleep 0.4"]}]))
        for i in range(6)]
    # one submit of six files: six separate autopackctl starts on a loaded machine can take
    # longer than a run, and then no two runs ever overlap
    res = d.ctl("submit", *specs, "--repo", str(repo), "--json")
    assert res.returncode == 0, res.stderr
    ids = json.loads(res.stdout)["run_ids"]
    assert len(ids) == 6
    assert d.ctl("wait", *ids).returncode == 0
    spans = _intervals(d, ids)
    points = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, delta in points:
        running += delta
        peak = max(peak, running)
    assert peak <= 2
    assert peak == 2  # and it really ran two at a time
    # submit order is kept: each run started no earlier than the one submitted before it
    starts = [s for s, _ in spans]
    assert starts == sorted(starts)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_cancel_kills_subprocess_tree(daemon_factory, repo, tmp_path):
    # host pids written to the test's /tmp: unconfined on purpose (the sandboxed case, where a
    # PID namespace ends everything, is in test_sandbox_daemon.py)
    daemon = daemon_factory(config={"sandbox": "off"})
    pids = tmp_path / "pids"
    spec = write_spec(tmp_path / "s.json", [{
        "id": "hang", "goal": "hang", "kind": "command",
        "checks": [f"sleep 300 & echo $! >> {pids}; (sleep 300 & echo $! >> {pids}; wait) & "
                   f"echo $$ >> {pids}; wait"]}])
    run_id = submit(daemon, spec, repo)
    deadline = time.monotonic() + 20
    while not (pids.exists() and len(pids.read_text().split()) >= 3):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    recorded = [int(p) for p in pids.read_text().split()]
    assert all(_alive(p) for p in recorded)
    res = daemon.ctl("cancel", run_id)
    assert res.returncode == 0, res.stderr
    st = wait_state(daemon, run_id)
    assert st.state == "cancelled"
    assert st.phases[0].state == "cancelled"
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in recorded):
        assert time.monotonic() < deadline, "process tree survived the cancel"
        time.sleep(0.05)
    # cancelling again is a clear error
    again = daemon.ctl("cancel", run_id)
    assert again.returncode == 2
    assert "already ended" in again.stderr


def test_cancel_queued_run(daemon_factory, repo, tmp_path):
    d = daemon_factory(config={"max_concurrent_runs": 1})
    slow = write_spec(tmp_path / "slow.json", [
        {"id": "s", "goal": "slow", "kind": "command", "checks": ["sleep 30"]}])
    first = submit(d, slow, repo)
    second = submit(d, slow, repo)
    assert d.ctl("cancel", second).returncode == 0
    assert wait_state(d, second).state == "cancelled"
    assert d.ctl("cancel", first).returncode == 0
    assert wait_state(d, first).state == "cancelled"


def test_kill9_right_after_submit_ack_loses_nothing(daemon_factory, repo, tmp_path):
    d = daemon_factory()
    spec = write_spec(tmp_path / "s.json", [
        {"id": "w", "goal": "write", "kind": "command", "checks": ["echo x > f.txt"]}])
    parsed = parse_spec_text(spec.read_text(), fmt="json")
    with d.client() as c:
        ids = [c.request(Submit(spec=parsed, repo=str(repo))).run_id for _ in range(20)]
    d.kill9()  # the instant after the last ack
    d.start()
    for run_id in ids:
        st = wait_state(d, run_id)
        assert st.state == "succeeded", (run_id, st)
    for run_id in ids:
        assert git(repo, "show", f"autopack/{run_id}:f.txt") == "x"


def test_sigterm_exits_zero_and_marks_running_runs_interrupted(daemon_factory, repo, tmp_path):
    d = daemon_factory()
    spec = write_spec(tmp_path / "s.json", [
        {"id": "long", "goal": "long", "kind": "command", "checks": ["sleep 60"]},
        {"id": "after", "goal": "after", "kind": "command", "checks": ["true"]}])
    run_id = submit(d, spec, repo)
    wait_state(d, run_id, ("running",))
    time.sleep(0.3)
    assert d.stop() == 0
    d.start()
    # resumed on restart: the interrupted phase starts a new attempt
    with d.client() as c:
        deadline = time.monotonic() + 20
        while True:
            st = c.request(GetStatus(run_id=run_id))
            if st.phases[0].attempts >= 2:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert st.state == "running"
    assert d.ctl("cancel", run_id).returncode == 0


# ---------------------------------------------------------------- bad input




def _closed(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize(("payload", "code"), [
    pytest.param(struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1", ErrorCode.BAD_FRAME, id="garbage-msgpack"),
    pytest.param(struct.pack(">I", 50 * 1024 * 1024), ErrorCode.FRAME_TOO_LARGE, id="oversized"),
    pytest.param(encode_frame(GetHealth()), ErrorCode.HELLO_REQUIRED, id="no-hello"),
    pytest.param(encode_frame(Hello(version=99)), ErrorCode.VERSION_MISMATCH, id="wrong-version"),
    pytest.param(struct.pack(">I", 12) + msgspec.msgpack.encode({"t": "nope", "x": 1}).ljust(12, b"\x00"),
                 ErrorCode.BAD_FRAME, id="unknown-message"),
])
def test_bad_frames_get_error_and_close_others_unaffected(daemon, payload, code):
    with daemon.client() as healthy:
        s = raw_connect(daemon, 10)
        s.sendall(payload)
        reply = read_reply(s)
        assert reply is not None
        assert reply.code == code
        assert reply.message
        assert _closed(s)
        s.close()
        # the healthy connection and the daemon keep working
        assert healthy.request(GetHealth()).ready


def test_oversized_frame_after_hello(daemon):
    s = raw_connect(daemon, 10)
    s.sendall(encode_frame(Hello()))
    assert read_reply(s).version == 1
    s.sendall(struct.pack(">I", 2 * 1024 * 1024) + b"x" * 1000)
    reply = read_reply(s)
    assert reply.code == ErrorCode.FRAME_TOO_LARGE
    assert "exceeds" in reply.message
    s.close()
    with daemon.client() as c:
        assert c.request(GetHealth()).ready


def test_invalid_spec_lists_every_problem(daemon, repo, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('goal = ""\nbogus = 1\n[[phases]]\nid = "Bad Id"\nkind = "weird"\n'
                   '[[phases]]\nid = "ok"\ngoal = "x"\ntimeout_s = -1\n')
    res = daemon.ctl("submit", str(bad), "--repo", str(repo))
    assert res.returncode == 2
    for needle in ("goal: must not be empty", "bogus: unknown field", "phases[0].id",
                   "phases[0].goal: required", "phases[0].kind", "phases[1].timeout_s"):
        assert needle in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    with daemon.client() as c:
        assert c.request(GetHealth()).runs == {}  # nothing half-stored


def test_daemon_side_validation_and_repo_checks(daemon, tmp_path):
    spec = parse_spec_text('goal="g"\n[[phases]]\nid="a"\ngoal="x"\nkind="command"\n'
                           'checks=["true"]\n', fmt="toml")
    notgit = tmp_path / "plain"
    notgit.mkdir()
    with daemon.client() as c:
        for repo, needle in [(str(notgit), "not a git repository"),
                             ("relative/path", "absolute path"),
                             (str(tmp_path / "missing"), "does not exist")]:
            with pytest.raises(RemoteError) as err:
                c.request(Submit(spec=spec, repo=repo))
            assert err.value.code == ErrorCode.INVALID_SPEC
            assert any(needle in d for d in err.value.details), err.value.details
        assert c.request(GetHealth()).runs == {}


def test_unknown_run_id(daemon):
    for cmd in (["status", "nope"], ["report", "nope"], ["logs", "nope"], ["cancel", "nope"]):
        res = daemon.ctl(*cmd)
        assert res.returncode == 2
        assert "no run with id 'nope'" in res.stderr


def test_no_daemon_gives_one_clear_line(tmp_path):
    from .conftest import BIN

    res = subprocess.run([str(BIN / "autopackctl"), "--socket", str(tmp_path / "none.sock"),
                          "status", "x"], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0
    assert "not running" in res.stderr


@pytest.mark.skipif(os.getuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to connect as another user")
def test_forbidden_uid_is_refused(daemon_factory, tmp_path):
    import tempfile

    public = Path(tempfile.mkdtemp(prefix="autopack-test-"))
    os.chmod(public, 0o755)  # every parent of /tmp/x is traversable by nobody
    d = daemon_factory(config={"socket_mode": 0o666, "socket": str(public / "ctl.sock")})
    nobody = pwd.getpwnam("nobody")
    script = (
        "import socket,struct,msgspec\n"
        f"s=socket.socket(socket.AF_UNIX); s.connect({d.socket!r})\n"
        # the daemon answers before any hello: read its refusal
        "h=s.recv(4); n=struct.unpack('>I',h)[0]; print(msgspec.msgpack.decode(s.recv(n)))\n"
    )
    with d.client() as healthy:
        res = subprocess.run(["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                              "--clear-groups", str(Path(os.sys.executable)), "-c", script],
                             capture_output=True, text=True, timeout=30)
        assert "forbidden" in res.stdout, res.stdout + res.stderr
        assert str(nobody.pw_uid) in res.stdout
        assert healthy.request(GetHealth()).ready
    d.stop()
    shutil.rmtree(public, ignore_errors=True)


def test_health_endpoints(daemon):
    status, body = daemon.http("/healthz")
    assert status == 200
    assert body["alive"] is True
    status, body = daemon.http("/readyz")
    assert status == 200
    assert body["ready"] is True
    assert body["parts"]["store"] == "ok"
    status, _ = daemon.http("/nope")
    assert status == 404
    res = daemon.ctl("health", "--json")
    assert res.returncode == 0
    assert json.loads(res.stdout)["ready"] is True


def test_socket_is_private_by_default(daemon):
    assert oct(os.stat(daemon.socket).st_mode & 0o777) == "0o600"


def test_health_closes_after_connection_close(daemon):
    port = int(daemon.health_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):  # the server must close: a hang here times out at 5 s
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    assert b'"alive": true' in data


def test_socket_resolution_order(tmp_path, monkeypatch):
    from autopack.daemon.ctl._client import SYSTEM_SOCKET, resolve_socket

    monkeypatch.setenv("AUTOPACK_SOCKET", str(tmp_path / "env.sock"))
    assert resolve_socket("/x/flag.sock") == "/x/flag.sock"
    assert resolve_socket(None) == str(tmp_path / "env.sock")
    monkeypatch.delenv("AUTOPACK_SOCKET")
    monkeypatch.setenv("AUTOPACK_STATE_DIR", str(tmp_path / "state"))
    assert resolve_socket(None) == str(tmp_path / "state" / "autopackd.sock")
    monkeypatch.delenv("AUTOPACK_STATE_DIR")
    expected = SYSTEM_SOCKET if os.path.exists(SYSTEM_SOCKET) else None
    if expected:
        assert resolve_socket(None) == expected
    else:
        assert resolve_socket(None).endswith("autopack/autopackd.sock")


@pytest.mark.skipif(os.getuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to connect as another user")
def test_members_of_the_socket_group_are_served(daemon_factory, tmp_path):
    import grp
    import tempfile

    nogroup = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
    public = Path(tempfile.mkdtemp(prefix="autopack-test-"))
    os.chmod(public, 0o755)
    d = daemon_factory(config={"socket_mode": 0o660, "socket_group": nogroup,
                               "socket": str(public / "ctl.sock")})
    nobody = pwd.getpwnam("nobody")
    script = (
        "import socket,struct,msgspec\n"
        f"s=socket.socket(socket.AF_UNIX); s.connect({d.socket!r})\n"
        "b=msgspec.msgpack.encode({'t':'hello','version':1,'client':'x'})\n"
        "s.sendall(struct.pack('>I',len(b))+b)\n"
        "h=s.recv(4); n=struct.unpack('>I',h)[0]; print(msgspec.msgpack.decode(s.recv(n)))\n"
    )
    res = subprocess.run(["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                          "--clear-groups", str(Path(os.sys.executable)), "-c", script],
                         capture_output=True, text=True, timeout=30)
    assert "welcome" in res.stdout, res.stdout + res.stderr
    d.stop()
    shutil.rmtree(public, ignore_errors=True)

"""A daemon that cannot start says why in one line, exits 2 and leaves nothing behind;
one state dir serves one daemon; SIGTERM removes the socket file (issue 13, issue 15 item 2).
All through real autopackd processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import BIN, DaemonProc, wait_state, write_spec


def _autopackd(config: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOPACK_")}
    return subprocess.run([str(BIN / "autopackd"), "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def _config(path: Path, **settings) -> Path:
    base = {"health_listen": "127.0.0.1:0", "grace_period_s": 3, "min_free_disk_mb": 1}
    base.update(settings)
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in base.items()))
    return path


def _one_line_refusal(res: subprocess.CompletedProcess[str], needle: str) -> None:
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("autopackd: "), res.stderr
    assert needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_busy_health_port_one_line_and_nothing_left_behind(tmp_path):
    """Was: a full ExceptionGroup traceback, exit 1, socket file and lock left behind."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    state = tmp_path / "fresh-state"
    sock = tmp_path / "ctl.sock"
    try:
        res = _autopackd(_config(tmp_path / "c.toml", state_dir=str(state), socket=str(sock),
                                 health_listen=f"127.0.0.1:{port}"))
    finally:
        busy.close()
    _one_line_refusal(res, f"cannot listen on health_listen 127.0.0.1:{port}")
    assert not sock.exists()
    assert not state.exists()  # it created the state dir for this start: removed again


def test_busy_port_keeps_an_existing_state_dir_untouched(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    state = tmp_path / "state"
    state.mkdir()
    (state / "keep.txt").write_text("x")
    try:
        res = _autopackd(_config(tmp_path / "c.toml", state_dir=str(state),
                                 health_listen=f"127.0.0.1:{busy.getsockname()[1]}"))
    finally:
        busy.close()
    _one_line_refusal(res, "cannot listen on health_listen")
    assert sorted(p.name for p in state.iterdir()) == ["keep.txt"]


def test_unwritable_state_dir_one_line(tmp_path):
    state = tmp_path / "ro"
    state.mkdir()
    if os.geteuid() == 0:
        # root ignores permission bits: a read-only mount is what refuses root
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(state)],
                                 capture_output=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs: {mounted.stderr.decode().strip()}")
    else:
        state.chmod(0o500)
    try:
        res = _autopackd(_config(tmp_path / "c.toml", state_dir=str(state),
                                 socket=str(tmp_path / "ctl.sock")))
        _one_line_refusal(res, "is not writable")
        assert not (tmp_path / "ctl.sock").exists()
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(state)], check=False)
        else:
            state.chmod(0o700)


def test_second_daemon_on_the_same_state_dir_refuses_and_touches_nothing(daemon_factory, repo,
                                                                        tmp_path):
    """Was: the second daemon (other socket) started and SIGKILLed the first's live check."""
    first = daemon_factory()
    spec = write_spec(tmp_path / "s.json", [{"id": "a", "goal": "x", "kind": "command",
                                             "checks": ["sleep 4; echo done"]}])
    run_id = json.loads(first.ctl("submit", str(spec), "--repo", str(repo), "--json").stdout)["run_id"]
    wait_state(first, run_id, ("running",))
    time.sleep(0.5)  # the check's process group is recorded
    other_sock = tmp_path / "other.sock"
    res = _autopackd(_config(tmp_path / "second.toml", state_dir=str(first.state_dir),
                             socket=str(other_sock)))
    _one_line_refusal(res, "is in use by another autopackd")
    assert f"pid {first.proc.pid}" in res.stderr
    assert not other_sock.exists()
    st = wait_state(first, run_id, timeout=60)
    assert st.state == "succeeded", st  # its check was not killed
    assert "leftover" not in first.log.read_text()


def test_sigterm_removes_the_socket_file(daemon_factory):
    d = daemon_factory()
    assert Path(d.socket).exists()
    assert d.stop() == 0
    assert not Path(d.socket).exists()
    # and the state dir lock went with the process: a new daemon starts on it
    d.start()
    assert d.stop() == 0


def test_exit_codes_are_documented():
    res = subprocess.run([str(BIN / "autopackd"), "--help"], capture_output=True, text=True)
    assert "exit status:" in res.stdout
    assert "2  cannot start" in res.stdout


def test_daemon_proc_helper_still_works_after_a_refused_start(tmp_path):
    """A refused start leaves the socket path free for the next daemon."""
    d = DaemonProc(tmp_path / "state")
    d.start()
    try:
        res = _autopackd(d.config_path)
        _one_line_refusal(res, "in use by another autopackd")
        with d.client() as c:
            assert c.welcome.pid == d.proc.pid
    finally:
        d.stop()

"""autopackd as a Unix service: sd_notify, socket activation, /metrics — real daemon processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

from autopack.daemon.ctl._client import Client
from autopack.protocol import GetHealth
from prometheus_client.parser import text_string_to_metric_families

from .conftest import BIN, wait_state, write_spec


def recv_all(sock: socket.socket, until: str, timeout: float = 20) -> list[str]:
    """Datagrams received until one contains ``until``."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            break
        got.append(data)
        if until in data:
            return got
    raise AssertionError(f"never received {until!r}; got {got}")


def test_notify_ready_only_when_socket_accepts_then_stopping(daemon_factory, tmp_path):
    notify_path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify_path)
    d = daemon_factory(start=False, env={"NOTIFY_SOCKET": notify_path,
                                         "WATCHDOG_USEC": "400000"})
    d.proc = subprocess.Popen([str(BIN / "autopackd"), "--config", str(d.config_path)],
                              env=d.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    msgs = recv_all(listener, "READY=1")
    # the instant READY=1 arrives, the control socket accepts and answers
    with Client(d.socket, timeout=5) as c:
        assert c.request(GetHealth()).ready
    assert not any("READY=1" in m for m in msgs[:-1])
    assert "STATUS=" in msgs[-1]  # ready carries the first status line
    # watchdog pings at half the interval while the loop is healthy
    pings = recv_all(listener, "WATCHDOG=1", timeout=5)
    assert any("WATCHDOG=1" in m for m in pings)
    d.proc.send_signal(signal.SIGTERM)
    recv_all(listener, "STOPPING=1")
    assert d.proc.wait(30) == 0
    listener.close()


def test_sighup_sends_reloading_then_ready(daemon_factory, tmp_path):
    notify_path = str(tmp_path / "n.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify_path)
    d = daemon_factory(start=False, env={"NOTIFY_SOCKET": notify_path})
    d.proc = subprocess.Popen([str(BIN / "autopackd"), "--config", str(d.config_path)],
                              env=d.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    recv_all(listener, "READY=1")
    d.proc.send_signal(signal.SIGHUP)
    msgs = recv_all(listener, "READY=1")
    reloading = [i for i, m in enumerate(msgs) if "RELOADING=1" in m]
    assert reloading
    assert "MONOTONIC_USEC=" in msgs[reloading[0]]
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(30) == 0
    listener.close()


LAUNCHER = r"""
import os, socket, sys
path, argv = sys.argv[1], sys.argv[2:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o600)
s.listen(16)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())  # exec keeps the pid
os.execv(argv[0], argv)
"""


def test_socket_activation_uses_passed_descriptor(daemon_factory, repo, tmp_path):
    activated = str(tmp_path / "activated.sock")
    d = daemon_factory(start=False)
    d.socket = activated
    with open(d.log, "ab") as logf:
        d.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, activated, str(BIN / "autopackd"), "--config",
             str(d.config_path)], env=d.env, stdout=logf, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        try:
            with Client(activated, timeout=5) as c:
                assert c.request(GetHealth()).ready
            break
        except Exception:
            assert time.monotonic() < deadline, d.log.read_text()
            time.sleep(0.05)
    # the daemon did not create its own socket, it serves the one it was given
    assert not (d.state_dir / "ctl.sock").exists()
    assert "socket-activated" in d.log.read_text()
    spec = write_spec(tmp_path / "s.json", [{"id": "a", "goal": "a", "kind": "command",
                                             "checks": ["true"]}])
    res = d.ctl("submit", str(spec), "--repo", str(repo))
    assert res.returncode == 0, res.stderr
    assert wait_state(d, res.stdout.strip()).state == "succeeded"
    # checks never inherit the activation variables or the descriptor
    spec2 = write_spec(tmp_path / "s2.json", [{"id": "env", "goal": "env", "kind": "command",
                                               "checks": ['test -z "$LISTEN_FDS$NOTIFY_SOCKET"',
                                                          "! test -e /proc/self/fd/3 || "
                                                          "! readlink /proc/self/fd/3 | grep -q socket"]}])
    res = d.ctl("submit", str(spec2), "--repo", str(repo))
    assert wait_state(d, res.stdout.strip()).state == "succeeded"


def test_metrics_parse_and_count(daemon, repo, tmp_path):
    spec = write_spec(tmp_path / "s.json", [{"id": "a", "goal": "a", "kind": "command",
                                             "checks": ["false"]}])
    run_id = json.loads(daemon.ctl("submit", str(spec), "--repo", str(repo), "--json").stdout)["run_id"]
    wait_state(daemon, run_id)
    status, text = daemon.http("/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    runs = {s.labels.get("state"): s.value for s in families["autopack_runs"].samples}
    assert runs["failed"] == 1
    failures = {s.labels.get("pattern"): s.value
                for s in families["autopack_failures"].samples if s.name.endswith("_total")}
    assert sum(failures.values()) == 1
    assert "autopack_control_connections" in families or any(
        n.startswith("autopack_control_connections") for n in families)


def test_journal_prefixes_under_systemd(daemon_factory, tmp_path):
    """With JOURNAL_STREAM matching stderr, log lines carry <N> priorities."""
    d = daemon_factory(start=False)
    logf = open(d.log, "ab")
    st = os.fstat(logf.fileno())
    d.env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    d.proc = subprocess.Popen([str(BIN / "autopackd"), "--config", str(d.config_path)],
                              env=d.env, stdout=logf, stderr=logf)
    logf.close()
    deadline = time.monotonic() + 20
    while "ready" not in d.log.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    d.stop()
    lines = [ln for ln in d.log.read_text().splitlines() if ln.strip()]
    assert lines
    assert all(ln.startswith("<") and ln[2] == ">" for ln in lines), lines


def test_ab_fraction_assigns_and_records_arms(daemon_factory, repo, tmp_path):
    spec = write_spec(tmp_path / "s.json", [{"id": "a", "goal": "a", "kind": "command",
                                             "checks": ["true"]}])
    for fraction, arm in ((1.0, "baseline"), (0.0, "hardened")):
        d = daemon_factory(f"state-{arm}", config={"ab_fraction": fraction})
        ids = [json.loads(d.ctl("submit", str(spec), "--repo", str(repo), "--json").stdout)["run_id"]
               for _ in range(3)]
        for run_id in ids:
            st = wait_state(d, run_id)
            assert st.arm == arm
        by_arm = json.loads(d.ctl("stats", "--by-arm", "--json").stdout)["arms"]
        assert by_arm[arm]["runs_total"] == 3
        d.stop()

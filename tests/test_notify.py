"""sd_notify, watchdog and socket activation against real sockets and real processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
from autopack.daemon._notify import (
    Heartbeat,
    Notifier,
    activated_unix_listener,
    listen_fds,
    watchdog_interval,
    watchdog_loop,
)

from tests.conftest import ci_requires

ci_requires("systemd-socket-activate")  # package systemd (make system-deps)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory: AF_UNIX paths are limited to 108 bytes, pytest's tmp_path can be long."""
    path = Path(tempfile.mkdtemp(prefix="apn-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def receiver(short_dir: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket playing systemd's notification socket, and its NOTIFY_SOCKET value."""
    path = str(short_dir / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield sock, path
    sock.close()


def drain(sock: socket.socket) -> list[str]:
    """Every datagram waiting on ``sock``, in arrival order."""
    out: list[str] = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


# --- Notifier -------------------------------------------------------------


def test_messages_arrive_in_order(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    with Notifier.from_env({"NOTIFY_SOCKET": path}) as notifier:
        assert notifier.enabled
        assert notifier.status("starting: opening store")
        assert notifier.ready(status="0 running, 2 queued")
        assert notifier.watchdog()
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert notifier.reloading()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert notifier.ready()
        assert notifier.stopping()
    got = drain(sock)
    assert got[:3] == ["STATUS=starting: opening store", "READY=1\nSTATUS=0 running, 2 queued", "WATCHDOG=1"]
    reload_lines = got[3].split("\n")
    assert reload_lines[0] == "RELOADING=1"
    key, _, usec = reload_lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(usec) <= after
    assert got[4:] == ["READY=1", "STOPPING=1"]


def test_abstract_socket_name() -> None:
    name = f"autopack-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.setblocking(False)
    try:
        with Notifier.from_env({"NOTIFY_SOCKET": "@" + name}) as notifier:
            assert notifier.ready()
        assert drain(sock) == ["READY=1"]
    finally:
        sock.close()


def test_status_is_one_line(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    with Notifier(path) as notifier:
        notifier.status("2 running\n1 queued")
    # A newline would start a new KEY=VALUE assignment systemd tries to parse.
    assert drain(sock) == ["STATUS=2 running 1 queued"]


def test_not_under_systemd_is_a_noop() -> None:
    env: dict[str, str] = {}
    notifier = Notifier.from_env(env)
    assert not notifier.enabled
    assert notifier.watchdog_interval() is None
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    notifier.close()


def test_from_env_unsets_variables_so_children_do_not_inherit(receiver: tuple[socket.socket, str]) -> None:
    _, path = receiver
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid()), "PATH": "/bin"}
    with Notifier.from_env(env) as notifier:
        assert notifier.enabled
        assert notifier.watchdog_interval() == 2.0
    assert env == {"PATH": "/bin"}


def test_from_env_can_keep_variables(receiver: tuple[socket.socket, str]) -> None:
    _, path = receiver
    env = {"NOTIFY_SOCKET": path}
    Notifier.from_env(env, unset_environment=False).close()
    assert env == {"NOTIFY_SOCKET": path}


def test_close_is_idempotent_and_stops_sending(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    notifier = Notifier(path)
    notifier.close()
    notifier.close()
    assert notifier.ready() is False
    assert drain(sock) == []


def test_send_to_a_vanished_socket_returns_false(short_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Notifier(str(short_dir / "nobody-listens")) as notifier:
        assert notifier.enabled
        assert notifier.ready() is False
    assert "sd_notify 'READY' failed" in caplog.text


def test_non_unix_address_disables(caplog: pytest.LogCaptureFixture) -> None:
    with Notifier("vsock:2:1234") as notifier:
        assert not notifier.enabled
        assert notifier.ready() is False
    assert "not a unix socket address" in caplog.text


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({}, None, id="unset"),
        pytest.param({"WATCHDOG_USEC": "60000000"}, 30.0, id="half-of-60s"),
        pytest.param({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "<self>"}, 30.0, id="our-pid"),
        pytest.param({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None, id="other-pid"),
        pytest.param({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "x"}, None, id="garbage-pid"),
        pytest.param({"WATCHDOG_USEC": "0"}, None, id="zero"),
        pytest.param({"WATCHDOG_USEC": "-5"}, None, id="negative"),
        pytest.param({"WATCHDOG_USEC": "soon"}, None, id="garbage"),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    env = {k: (str(os.getpid()) if v == "<self>" else v) for k, v in env.items()}
    assert watchdog_interval(env) == expected


def test_heartbeat_goes_stale() -> None:
    now = [100.0]
    beat = Heartbeat(5.0, clock=lambda: now[0])
    assert beat()
    now[0] = 105.0
    assert beat()
    now[0] = 105.1
    assert not beat()
    beat.beat()
    assert beat()


# --- watchdog loop ---------------------------------------------------------


async def wait_for_ping(sock: socket.socket) -> list[str]:
    """Yield to the loop until at least one datagram arrived; bounded, never a timed assertion."""
    with trio.fail_after(10):
        while True:
            got = drain(sock)
            if got:
                return got
            await trio.sleep(0.005)


async def test_watchdog_pings_stop_while_the_loop_is_blocked(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    interval = 0.02
    with Notifier(path) as notifier:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(watchdog_loop, notifier, interval, alive=lambda: True))
            assert set(await wait_for_ping(sock)) == {"WATCHDOG=1"}
            drain(sock)
            # Wedge the event loop for ten intervals, as blocking code in an actor would.
            time.sleep(10 * interval)  # noqa: ASYNC251  (blocking is the point)
            assert drain(sock) == [], "a ping was sent while the event loop was blocked"
            # Once the loop runs again, so does the pinger.
            assert set(await wait_for_ping(sock)) == {"WATCHDOG=1"}
            nursery.cancel_scope.cancel()


async def test_watchdog_pings_stop_when_not_alive(
    receiver: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture
) -> None:
    sock, path = receiver
    alive = [True]
    with Notifier(path) as notifier:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(watchdog_loop, notifier, 0.01, alive=lambda: alive[0]))
            await wait_for_ping(sock)
            alive[0] = False
            drain(sock)
            # Let the pinger run many rounds with a failing liveness check.
            for _ in range(10):
                await trio.sleep(0.01)
            assert drain(sock) == []
            assert "withholding WATCHDOG=1" in caplog.text
            alive[0] = True
            assert set(await wait_for_ping(sock)) == {"WATCHDOG=1"}
            nursery.cancel_scope.cancel()


async def test_watchdog_loop_rejects_nonpositive_interval() -> None:
    with Notifier(None) as notifier, pytest.raises(ValueError, match="positive"):
        await watchdog_loop(notifier, 0, alive=lambda: True)


# --- socket activation -------------------------------------------------------

# Plays systemd's part: put the listening socket at fd 3, set LISTEN_FDS and
# LISTEN_PID (our pid, which exec keeps), then exec the service.
LAUNCHER = textwrap.dedent(
    """
    import os, sys
    src = int(sys.argv[1])
    if src != 3:
        os.dup2(src, 3)  # the copy at 3 is inheritable
        os.close(src)
    os.environ["LISTEN_FDS"] = "1"
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.environ["LISTEN_FDNAMES"] = "control"
    os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
    """
)

# The service: take the passed descriptor and answer one connection on it.
CHILD = textwrap.dedent(
    """
    import fcntl, json, os, socket, sys
    from autopack.daemon._notify import activated_unix_listener, listen_fds
    if sys.argv[1] == "listen_fds":
        fds = listen_fds()
        sock = socket.socket(fileno=fds[0])
    else:
        sock = activated_unix_listener()
        fds = [sock.fileno()]
    cloexec = bool(fcntl.fcntl(fds[0], fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
    left = sorted(k for k in os.environ if k.startswith("LISTEN_"))
    conn, _ = sock.accept()
    conn.sendall(json.dumps({"fds": fds, "cloexec": cloexec, "env_left": left}).encode())
    conn.close()
    sock.close()
    """
)


def recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("mode", ["listen_fds", "activated_unix_listener"])
def test_socket_activation_with_a_prebound_fd3(short_dir: Path, mode: str) -> None:
    (short_dir / "launcher.py").write_text(LAUNCHER)
    (short_dir / "child.py").write_text(CHILD)
    path = str(short_dir / "ctl.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    proc = subprocess.Popen(
        [sys.executable, str(short_dir / "launcher.py"), str(listener.fileno()), str(short_dir / "child.py"), mode],
        pass_fds=(listener.fileno(),),
        stderr=subprocess.PIPE,
    )
    # Only the child holds the listening socket from here on.
    listener.close()
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(30)
        client.connect(path)
        answer = json.loads(recv_all(client))
        client.close()
    finally:
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert answer == {"fds": [3], "cloexec": True, "env_left": []}


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate not installed")
def test_socket_activation_through_systemd_socket_activate(short_dir: Path) -> None:
    (short_dir / "child.py").write_text(CHILD)
    path = str(short_dir / "ctl.sock")
    proc = subprocess.Popen(
        ["systemd-socket-activate", "-l", path, sys.executable, str(short_dir / "child.py"), "activated_unix_listener"],
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        # It announces the socket once it listens, and starts the child on the first connection.
        assert b"Listening on" in proc.stderr.readline()
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(30)
        client.connect(path)
        answer = json.loads(recv_all(client))
        client.close()
    finally:
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert answer == {"fds": [3], "cloexec": True, "env_left": []}


def test_listen_fds_for_another_pid_are_not_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDNAMES", "control")
    assert listen_fds() == []
    assert not {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} & set(os.environ)


def test_no_socket_activation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    monkeypatch.delenv("LISTEN_PID", raising=False)
    assert listen_fds() == []
    assert activated_unix_listener() is None


def test_listen_fds_keeps_env_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_PID", "1")
    assert listen_fds(unset_environment=False) == []
    assert os.environ["LISTEN_FDS"] == "1"

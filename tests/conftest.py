"""Shared fixtures: real git repositories and a real autopackd process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from autopack.daemon.ctl._client import Client, DaemonUnavailable

BIN = Path(sys.executable).parent
GIT_ENV = {
    "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@localhost",
    "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@localhost",
}


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def make_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    """A real git repository with one commit of ``files``."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    for name, text in (files or {"README.md": "# sample\n"}).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


def write_spec(path: Path, phases: list[dict[str, Any]], goal: str = "test run",
               **extra: Any) -> Path:
    spec = {"goal": goal, "phases": phases, **extra}
    path.write_text(json.dumps(spec))
    return path


class DaemonProc:
    """A real autopackd subprocess on a temp state dir."""

    def __init__(self, state_dir: Path, config: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        config = dict(config or {})
        self.socket = str(config.pop("socket", state_dir / "ctl.sock"))
        self.config_path = state_dir.parent / f"{state_dir.name}.toml"
        settings: dict[str, Any] = {"state_dir": str(state_dir), "socket": self.socket,
                                    "health_listen": "127.0.0.1:0", "grace_period_s": 3,
                                    "min_free_disk_mb": 1}
        settings.update(config)
        lines = [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
        self.config_path.write_text("\n".join(lines) + "\n")
        self.env = {**os.environ, **(env or {})}
        self.env.pop("AUTOPACK_SOCKET", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = state_dir.parent / f"{state_dir.name}.log"
        self.health_url = ""

    def start(self, timeout: float = 20.0) -> DaemonProc:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        logf = open(self.log, "ab")  # noqa: SIM115 - the daemon writes to it until it stops
        self.proc = subprocess.Popen(
            [str(BIN / "autopackd"), "--config", str(self.config_path)],
            stdout=logf, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        logf.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"autopackd exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with self.client() as c:
                    from autopack.protocol import GetHealth

                    h = c.request(GetHealth())
                    self.health_url = h.endpoints.get("health", "")
                    return self
            except DaemonUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def client(self, timeout: float | None = 30.0) -> Client:
        return Client(self.socket, timeout=timeout)

    def ctl(self, *args: str, check: bool = False, input: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "AUTOPACK_SOCKET": self.socket}
        return subprocess.run([str(BIN / "autopackctl"), *args], env=env, capture_output=True,
                              text=True, check=check, input=input, timeout=timeout)

    def http(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.health_url + path, timeout=10) as resp:
                body = resp.read()
                status = resp.status
        except urllib.error.HTTPError as err:
            body, status = err.read(), err.code
        ctype = "json" if body.startswith(b"{") else "text"
        return status, json.loads(body) if ctype == "json" else body.decode()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[DaemonProc] = []

    def make(name: str = "state", config: dict[str, Any] | None = None,
             env: dict[str, str] | None = None, start: bool = True) -> DaemonProc:
        d = DaemonProc(tmp_path / name, config, env)
        started.append(d)
        return d.start() if start else d

    yield make
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
    # every store a daemon test produced: each run's recorded events, replayed through
    # the run engine, must give the stored state (issue 14)
    from ._replay import replay_problems

    problems = [line for db in {d.state_dir / "autopack.db" for d in started}
                if db.exists() for line in replay_problems(db)]
    if problems:
        pytest.fail("replay differs from the store:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def daemon(daemon_factory: Any) -> DaemonProc:
    return daemon_factory()


def submit_phase(d: Any, tmp_path: Path, repo: Path, phase: dict[str, Any] | None = None,
                 name: str = "s.json", **extra: Any) -> str:
    """Submit a one-phase run (a ``command`` phase unless ``phase`` says otherwise); its id."""
    ph = {"id": "tests", "goal": "the tests pass", "kind": "command", **(phase or {})}
    spec = write_spec(tmp_path / name, [ph], **extra)
    res = d.ctl("submit", str(spec), "--repo", str(repo), "--json")
    assert res.returncode == 0, res.stderr
    return str(json.loads(res.stdout)["run_id"])


def event_payloads(d: Any, run_id: str, kind: str) -> list[dict[str, Any]]:
    """The payloads of the run's events of ``kind``, oldest first (``logs --json``)."""
    rows = [json.loads(x) for x in d.ctl("logs", run_id, "--json").stdout.splitlines()]
    return [e["payload"] for e in rows if e["kind"] == kind]


def wait_state(d: DaemonProc, run_id: str, states: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
               timeout: float = 60.0) -> Any:
    from autopack.protocol import GetStatus

    deadline = time.monotonic() + timeout
    with d.client() as c:
        while True:
            st = c.request(GetStatus(run_id=run_id))
            if st.state in states:
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {st.state} after {timeout} s")
            time.sleep(0.05)


def ci_requires(*commands: str) -> None:
    """At import of a test module whose tests skip without these commands: under CI
    (``CI=true``) a missing one is a collection error, never a silent skip."""
    import shutil

    missing = [c for c in commands if shutil.which(c) is None]
    if missing and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI: {', '.join(missing)} not installed (make system-deps)", pytrace=False)


def require_system(command: str, package: str) -> str:
    """The path of a system ``command`` the test needs, or skip with a visible reason.

    Under CI (``CI=true``) a missing command is a failure, not a skip: `.ci/run` installs
    the Debian ``package`` (``make system-deps``), so its absence there is a defect.
    """
    import shutil

    path = shutil.which(command)
    if path is None:
        reason = f"{command} not installed (Debian package {package}; run: sudo make system-deps)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI: {reason}")
        pytest.skip(reason)
    return path


def raw_connect(d: DaemonProc, timeout: float = 30.0) -> Any:
    """A bare unix-socket connection to ``d`` (no hello sent): for tests of the framing."""
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(d.socket)
    return s


def read_reply(s: Any) -> Any:
    """One framed reply from a raw connection, decoded; ``None`` when the daemon closed it."""
    import struct

    from autopack.protocol import decode_reply

    header = b""
    while len(header) < 4:
        chunk = s.recv(4 - len(header))
        if not chunk:
            return None
        header += chunk
    (size,) = struct.unpack(">I", header)
    body = b""
    while len(body) < size:
        body += s.recv(size - len(body))
    return decode_reply(body)

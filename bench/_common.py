"""Shared pieces of the daemon benches: a real ``autopackd`` on a temp state dir,
git repositories of N files, HTTP probes of ``/healthz``, RSS sampling, percentiles.

Everything lives under one temporary directory (:func:`workspace`) that is
removed at the end, failure or not; every daemon started through
:class:`BenchDaemon` is killed on the way out, and so is any process left
running with its working directory inside the temp dir (check commands of a
daemon that was killed with ``kill -9``). Traffic is loopback only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from autopack.daemon.ctl._client import Client, DaemonUnavailable
from autopack.protocol import Follow, GetHealth, LogsEnd, RunSpec, parse_spec_text

BIN = Path(sys.executable).parent
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost",
}
TERMINAL = ("succeeded", "failed", "cancelled")


# ------------------------------------------------------------------ numbers
def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def summary_ms(values_s: list[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean in milliseconds of durations given in seconds."""
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else 0.0,
        "mean_ms": round(sum(ms) / len(ms), 3) if ms else 0.0,
    }


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_mb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_mb = int(line.split()[1]) // 1024
    load = ""
    with contextlib.suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "host": platform.node(), "loadavg": load,
            "cpus": os.cpu_count(), "cpu": cpu, "mem_mb": mem_mb,
            "kernel": platform.release(), "python": platform.python_version(),
            "git": subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()}


def emit(result: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    """Print ``result`` as JSON, or the human ``lines``."""
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print("\n".join(lines))


# ------------------------------------------------------------------ temp space and git
def tmpfs_dir() -> str | None:
    """``/dev/shm`` when it is a writable tmpfs, else ``None`` (the system temp dir)."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def fs_type(path: Path) -> str:
    """The filesystem type holding ``path`` (from /proc/mounts), e.g. ``ext4`` or ``tmpfs``."""
    best, kind = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and str(path).startswith(fields[1]) and len(fields[1]) > len(best):
                best, kind = fields[1], fields[2]
    return kind


def disk_of(path: Path) -> dict[str, str]:
    """``df -T`` of ``path``: the device, filesystem type and mount point the figures were
    measured on (benches print it: tmpfs and a throttled disk differ by 10-50x)."""
    out = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True).stdout.split("\n")
    fields = out[1].split() if len(out) > 1 else []
    if len(fields) >= 7:
        return {"device": fields[0], "type": fields[1], "mount": fields[6],
                "df_T": out[1].strip()}
    return {"device": "?", "type": fs_type(path), "mount": "?", "df_T": ""}


def spread(values: list[float]) -> dict[str, float]:
    """min / median / max of per-repetition figures."""
    ordered = sorted(values)
    if not ordered:
        return {"min": 0.0, "median": 0.0, "max": 0.0}
    mid = len(ordered) // 2
    med = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return {"min": round(ordered[0], 3), "median": round(med, 3), "max": round(ordered[-1], 3)}


@contextlib.contextmanager
def workspace(prefix: str, base: str | None = None) -> Iterator[Path]:
    """A temp dir (under ``base``, default the system temp dir) removed at the end;
    processes whose cwd is inside it are killed first."""
    root = Path(tempfile.mkdtemp(prefix=f"autopack-bench-{prefix}-", dir=base)).resolve()
    try:
        yield root
    finally:
        kill_processes_under(root)
        shutil.rmtree(root, ignore_errors=True)


def code_tree(checkout: Path, root: Path) -> Path:
    """A directory to put on ``PYTHONPATH`` so that ``autopack.*`` imports from
    ``checkout`` (a git checkout of this repository, e.g. ``git worktree add DIR REV``):
    the card's folders linked under ``root/code/autopack``, as ``make check`` does."""
    pkg = root / "code" / "autopack"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for name in ("daemon", "actors", "protocol"):
        if not (checkout / name).is_dir():
            raise SystemExit(f"{checkout} is not a checkout of autopack (no {name}/)")
        (pkg / name).symlink_to(checkout.resolve() / name)
    return pkg.parent


def kill_processes_under(root: Path) -> int:
    """SIGKILL every process of ours whose working directory is inside ``root``."""
    killed = 0
    me = os.getpid()
    prefix = str(root) + os.sep
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == str(root) or cwd.startswith(prefix):
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    return killed


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def make_repo(path: Path, n_files: int = 10) -> Path:
    """A git repository with one commit of ``n_files`` small files spread over directories."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("# bench repo\n")
    for i in range(max(n_files - 1, 0)):
        d = path / "src" / f"pkg{i // 100:03d}"
        if i % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"mod{i:05d}.py").write_text(f'"""module {i}"""\n\nVALUE = {i}\n\n'
                                          f"def f{i}(x):\n    return x + {i}\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    git(path, "repack", "-adq")  # packed, like any cloned repository
    git(path, "prune")
    return path


def command_spec(checks_per_phase: list[list[str]], goal: str = "bench run",
                 timeout_s: float = 600) -> RunSpec:
    """A run spec of ``command`` phases p1, p2, … with the given checks."""
    lines = [f"goal = {json.dumps(goal)}"]
    for i, checks in enumerate(checks_per_phase, 1):
        lines += ["[[phases]]", f'id = "p{i}"', f'goal = "phase {i}"', 'kind = "command"',
                  f"checks = {json.dumps(checks)}", f"timeout_s = {timeout_s}"]
    return parse_spec_text("\n".join(lines) + "\n", fmt="toml")


# ------------------------------------------------------------------ the daemon
class BenchDaemon:
    """A real ``autopackd`` process on ``root/<name>``; a context manager that always kills it."""

    def __init__(self, root: Path, name: str = "state", *, code: Path | None = None,
                 **config: Any) -> None:
        """``code``: run the daemon of another source tree (a :func:`code_tree` of a
        checkout), the same interpreter and dependencies: a before/after in one run."""
        self.code = code
        self.state_dir = root / name
        self.socket = str(root / f"{name}.sock")
        self.config_path = root / f"{name}.toml"
        self.log = root / f"{name}.log"
        settings: dict[str, Any] = {"state_dir": str(self.state_dir), "socket": self.socket,
                                    "health_listen": "127.0.0.1:0", "grace_period_s": 1,
                                    "min_free_disk_mb": 1, "watchdog": False,
                                    "log_level": "WARNING"}
        settings.update(config)
        self.config_path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
        self.proc: subprocess.Popen[bytes] | None = None
        self.health_url = ""
        self.health_port = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def spawn(self) -> None:
        """Start the process without waiting for it to serve."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOPACK_")}
        env.pop("NOTIFY_SOCKET", None)
        argv = [str(BIN / "autopackd")]
        if self.code is not None:  # PYTHONPATH comes before the editable install's finder
            env["PYTHONPATH"] = str(self.code)
            argv = [sys.executable, "-c",
                    "import sys; from autopack.daemon._main import main; sys.exit(main())"]
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen([*argv, "--config", str(self.config_path)],
                                         stdout=logf, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)

    def wait_serving(self, timeout: float = 30.0, poll_s: float = 0.005) -> None:
        """Wait until the control socket answers ``GetHealth``; learn the health URL."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"autopackd exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with self.client() as c:
                    h = c.request(GetHealth())
                self.health_url = h.endpoints.get("health", "")
                self.health_port = int(self.health_url.rsplit(":", 1)[1])
                return
            except DaemonUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(poll_s)

    def start(self) -> BenchDaemon:
        self.spawn()
        self.wait_serving()
        return self

    def client(self, timeout: float | None = 60.0) -> Client:
        return Client(self.socket, timeout=timeout)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (runs are interrupted, check process groups killed), SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()

    def __enter__(self) -> BenchDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.kill9()

    # -------------------------------------------------------------- observing
    def states(self, client: Client) -> dict[str, str]:
        """run id -> state of every run."""
        return {r.run_id: r.state for r in client.runs()}

    def event_kinds(self, run_id: str) -> list[str]:
        """The kinds of the run's events so far, in order."""
        kinds: list[str] = []
        with self.client() as c:
            for msg in c.stream(Follow(run_id=run_id)):
                if isinstance(msg, LogsEnd):
                    return kinds
                kinds.append(msg.kind)
        return kinds

    def proc_status(self, key: str) -> int:
        """A ``/proc/<pid>/status`` value in kB (``VmRSS``, ``VmHWM``); 0 when gone."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def tree_rss_kb(self) -> int:
        """RSS of the daemon alone (children excluded) in kB."""
        return self.proc_status("VmRSS")


def wait_until(pred: Callable[[], bool], timeout: float, poll_s: float = 0.02,
               what: str = "condition") -> float:
    """Poll ``pred`` until true; return the seconds waited. Raises TimeoutError."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what} not reached within {timeout:.0f} s")
        time.sleep(poll_s)
    return time.monotonic() - t0


# ------------------------------------------------------------------ health probes
_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def healthz_new_connection(port: int, timeout: float = 10.0) -> float:
    """One ``GET /healthz`` on a fresh TCP connection (raw socket); seconds taken.

    The response is read by its ``Content-Length`` (as urllib and curl do), then
    the client closes: the daemon's h11 server does not close the connection
    itself after a ``Connection: close`` request (see bench/README.md), so reading
    until EOF would wait for its 30 s idle timeout.
    """
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(_REQUEST)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    dt = time.perf_counter() - t0
    if not head.startswith(b"HTTP/1.1 200") or len(body) < length:
        raise RuntimeError(f"/healthz answered {data[:60]!r}")
    return dt


def server_closes_after_connection_close(port: int, wait_s: float = 2.0) -> bool:
    """Does the server close the connection after answering a ``Connection: close`` request
    (RFC 9112 §9.6) within ``wait_s``?"""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as s:
        s.sendall(_REQUEST)
        try:
            while s.recv(65536):
                pass
        except TimeoutError:
            return False
    return True


class KeepAliveProbe:
    """``GET /healthz`` over one persistent HTTP/1.1 connection (reconnects if closed)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get(self) -> float:
        t0 = time.perf_counter()
        try:
            self.conn.request("GET", "/healthz")
            resp = self.conn.getresponse()
            resp.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            t0 = time.perf_counter()
            self.conn.request("GET", "/healthz")
            resp = self.conn.getresponse()
            resp.read()
        dt = time.perf_counter() - t0
        if resp.status != 200:
            raise RuntimeError(f"/healthz answered {resp.status}")
        return dt

    def close(self) -> None:
        self.conn.close()


class Sampler:
    """Calls ``fn`` every ``interval_s`` on a thread and keeps the results, until stopped."""

    def __init__(self, fn: Callable[[], float], interval_s: float) -> None:
        self.fn, self.interval_s = fn, interval_s
        self.values: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.values.append(self.fn())
            except Exception as exc:  # keep sampling; report errors at the end
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

"""The daemon: composes the store, the actors, the services and the servers.

Composition only: requests are answered by ``_handler.RequestHandler`` with the
``_runs.Runs`` service; reports, retention, base pinning and the worktree sweep
are supervised services (``_services``) fed by the scheduler's run-ended
channel; health and metrics are combined by ``_healthview.HealthView``.

Start-up order (READY=1 is sent only at the end): state dir → store (migrated)
→ reconcile (kill leftovers of a dead daemon, interrupted runs, orphan
worktrees) → supervised actors and services (classifier, memory, scheduler,
reports, retention, base pinning, sweep) → control socket → health endpoint →
READY. Stop: SIGTERM/SIGINT → stop accepting, let runs reach a phase boundary
within the grace period, record the rest as interrupted, exit 0. SIGHUP swaps
in a new frozen settings snapshot (``_config.LiveSettings``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import trio
from autopack.actors._llm import LLM, RetryPolicy, read_api_key
from autopack.actors._memory import MemoryActor
from autopack.actors._pool import WorktreePool
from autopack.actors._ports import Classify, MitigatePort
from autopack.actors._run import RunServices, RunTools
from autopack.actors._sandbox import Sandbox
from autopack.actors._scheduler import Scheduler
from autopack.protocol import (
    DEFAULT_MAX_FRAME,
    Classification,
    ClassifyContext,
    Health,
    StorageError,
)

from ._config import LiveSettings, Settings
from ._control import ControlLimits, ControlServer, bind_unix_socket
from ._handler import RequestHandler
from ._healthview import HealthView
from ._records import Records
from ._runs import Runs
from ._services import (
    BasePinner,
    ReportsWriter,
    Retention,
    WorktreeSweeper,
    open_run_ended_channel,
    reconcile,
)
from ._store import Store
from ._supervisor import Supervisor

if TYPE_CHECKING:
    import socket

    from ._health import HealthServer
    from ._logging import RedactingFilter
    from ._notify import Notifier
    from ._statedir import StateDirLock

LOGGER = logging.getLogger(__name__)
VERSION = "0.1.0"


class StartupError(Exception):
    """Raised when the daemon cannot start (bad state dir, socket in use, …); exit status 2."""


class Daemon:
    version = VERSION

    def __init__(self, settings: Settings, *, config_file: str | None = None,
                 listen_sock: socket.socket | None = None, notifier: Notifier | None = None,
                 redactor: RedactingFilter | None = None) -> None:
        from ._notify import Heartbeat, Notifier

        self.live = LiveSettings(settings)
        self.config_file = config_file
        self.listen_sock = listen_sock
        self.notifier = notifier if notifier is not None else Notifier(None)
        self.redactor = redactor
        self.heartbeat = Heartbeat(max_age_s=10.0)
        self.state_dir = Path(settings.state_dir).resolve()
        self.store = Store(str(self.state_dir / "autopack.db"),
                           synchronous=settings.store_synchronous.upper())
        self.records = Records(self.store)
        self.supervisor = Supervisor(intensity=lambda: (self.settings.restart_limit,
                                                        self.settings.restart_window_s))
        self.memory = MemoryActor(
            str(self.state_dir / "autopack.db"), enabled=settings.enable_intention_context,
            deadline_s=settings.memory_deadline_ms / 1000, builder_bytes=settings.builder_context_bytes,
            doctor_bytes=settings.doctor_context_bytes)
        self.llm = self._make_llm()
        from autopack.actors.classifier import ClassifierActor

        self.classifier = ClassifierActor()
        tools = RunTools(classify=self._classify_fn(), mitigate=self._mitigate_fn(),
                         memory=self.memory.client(), llm=self.llm,
                         mean_doctor_tokens=lambda: self.records.mean_doctor_tokens())
        self.services = RunServices(
            records=self.records, state_dir=self.state_dir, settings=settings, tools=tools,
            pool=WorktreePool(self.state_dir / "worktrees" / ".pool", enabled=settings.worktree_pool,
                              per_repo=settings.worktree_pool_size,
                              budget_bytes=settings.worktree_pool_budget_mb << 20))
        self.live.on_swap(self._settings_swapped)
        # the run-ended channel: scheduler -> reports writer -> retention
        self._ended_send, ended_receive = open_run_ended_channel()
        self._reported_send, reported_receive = open_run_ended_channel()
        self.scheduler = Scheduler(self.services, limit=lambda: self.live.current.max_concurrent_runs,
                                   crash_limit=lambda: self.live.current.run_crash_limit,
                                   ended=self._ended_send)
        self.stopping = False
        self.pinner = BasePinner(self.store)
        self.sweeper = WorktreeSweeper(records=self.records, state_dir=self.state_dir)
        self.retention = Retention(store=self.store, live=self.live,
                                   reports_dir=self.state_dir / "reports", ended=reported_receive)
        self.runs = Runs(store=self.store, records=self.records, scheduler=self.scheduler,
                         llm=self.llm, live=self.live, pinner=self.pinner,
                         state_dir=self.state_dir, sandbox_mode=lambda: self.view.sandbox_mode(),
                         stopping=lambda: self.stopping)
        self.reports = ReportsWriter(records=self.records, reports_dir=self.state_dir / "reports",
                                     build=self.runs.report, ended=ended_receive,
                                     then=self._reported_send)
        self.view = HealthView(store=self.store, records=self.records, supervisor=self.supervisor,
                               memory=self.memory, llm=self.llm, scheduler=self.scheduler,
                               live=self.live, version=VERSION, stopping=lambda: self.stopping,
                               endpoints=lambda: {"health": f"http://{self._health_addr()}",
                                                  "socket": self.socket_path})
        self.handler = RequestHandler(runs=self.runs, health=self.view, memory=self.memory,
                                      version=VERSION)
        self.control: ControlServer | None = None
        self.health_port: int | None = None
        self.sandbox: Sandbox | None = None  # after the start-up probe
        self.started_at = time.time()
        self._ready = False
        self.dir_lock: StateDirLock | None = None  # while running
        self._health: HealthServer | None = None  # bound before anything is written
        self._sock: socket.socket | None = None  # the control socket (bound or socket-activated)
        self._sock_inode: tuple[int, int] | None = None

    @property
    def settings(self) -> Settings:
        """The current settings snapshot (read it once per decision)."""
        return self.live.current

    def _settings_swapped(self, snapshot: Settings) -> None:
        """A reload swapped the snapshot: hand it to the holders of a copy."""
        self.services.settings = snapshot
        self.memory.deadline_s = snapshot.memory_deadline_ms / 1000
        self.memory.enabled = snapshot.enable_intention_context

    # what the dashboard reads (web.DaemonView)
    async def health(self) -> Health:
        return await self.view.health()

    async def report(self, run_id: str) -> dict[str, Any]:
        return await self.runs.report(run_id)

    def _make_llm(self) -> LLM:
        """The Claude client shared by all runs; the key never leaves it (or reaches logs)."""
        from autopack.actors._sandbox import scrub_environ

        s = self.live.current
        secret = read_api_key(api_key_file=s.api_key_file)
        if secret is not None and self.redactor is not None:
            self.redactor.add_secret(secret.reveal())
        # read once: from here on it lives only in the client, not in /proc/<pid>/environ
        scrub_environ(["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"])
        return LLM(model=s.model, max_tokens=s.max_tokens,
                   base_url=s.anthropic_base_url,
                   api_key=secret.reveal() if secret else None,
                   max_concurrency=s.llm_max_concurrency,
                   prices=s.prices,
                   daily_usd_budget=s.daily_usd_budget,
                   daily_token_budget=s.daily_token_budget,
                   daily_spent=self.records.spend_since,
                   min_output_tokens=s.min_output_tokens,
                   count_tokens=s.count_tokens,
                   builder_retry=RetryPolicy(model=s.builder_retry_model,
                                             model_on=s.builder_retry_model_on))

    def _classify_fn(self) -> Classify:
        """Run actors ask the classifier actor; if it does not answer (down, crashed while
        holding the request, past the deadline), the failure is unclassified (the Doctor
        takes over) and the run goes on."""
        client = self.classifier.client()

        async def classify(output: str, exit_code: int | None,
                           ctx: ClassifyContext) -> Classification:
            return await client.classify(output, exit_code, ctx, timeout_s=30)

        return classify

    def _mitigate_fn(self) -> MitigatePort:
        from autopack.actors.classifier import apply_mitigation

        return apply_mitigation

    # ================================================================ lifecycle
    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until SIGTERM/SIGINT (or cancellation). Raises SupervisorGaveUp/StartupError.

        A start that fails (state dir in use or unwritable, busy port, damaged database)
        raises :class:`StartupError` with one line and leaves nothing behind: no socket
        file, no lock, no directory it created. On the way out the socket file this
        daemon created is removed (a socket-activated one belongs to systemd)."""
        self._lock_state_dir()
        assert self.dir_lock is not None
        self._ready = False
        try:
            self._check_writable()
            await self._bind_listeners()
            self._prepare_dirs()
            await self._open_store()

            await self._serve(_Started(task_status, self))
        finally:
            with anyio.CancelScope(shield=True):
                await self.llm.aclose()
                await self.store.close()
                if self._health is not None:
                    await self._health.aclose()
                self._remove_socket()
                if not self._ready and self.dir_lock.created:
                    shutil.rmtree(self.state_dir, ignore_errors=True)  # all of it was ours
                self.dir_lock.release()

    def _lock_state_dir(self) -> None:
        from ._statedir import StateDirBusy, lock_state_dir

        try:
            self.dir_lock = lock_state_dir(self.state_dir)
        except StateDirBusy as exc:
            raise StartupError(str(exc)) from None
        except OSError as exc:
            raise StartupError(f"cannot create state dir {self.state_dir}: "
                               f"{exc.strerror or exc}") from None

    def _check_writable(self) -> None:
        import tempfile

        try:
            with tempfile.TemporaryFile(dir=self.state_dir, prefix=".write-probe-"):
                pass
        except OSError as exc:
            raise StartupError(f"state dir {self.state_dir} is not writable: "
                               f"{exc.strerror or exc}") from None

    async def _bind_listeners(self) -> None:
        """The health port and the control socket, before anything is written: a busy
        port or socket fails the start with nothing to undo but these."""
        self._health = self._health_server()
        try:
            await self._health.bind()
        except OSError as exc:
            raise StartupError(f"cannot listen on health_listen {self.settings.health_listen}: "
                               f"{exc.strerror or exc}") from None
        self._sock = self._control_socket()

    async def _open_store(self) -> None:
        from ._integrity import StoreDamaged, check_database

        db = self.state_dir / "autopack.db"
        try:
            await trio.to_thread.run_sync(check_database, db, self.state_dir)
        except StoreDamaged as exc:
            raise StartupError(str(exc)) from None
        try:
            await self.store.open()
        except Exception as exc:
            raise StartupError(f"cannot open the database {db}: {exc}") from exc

    def _remove_socket(self) -> None:
        """Unlink the control socket file if it is still the one this daemon created."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self.listen_sock is None and self._sock_inode is not None:
            try:
                st = os.stat(self.socket_path)
                if (st.st_dev, st.st_ino) == self._sock_inode:
                    os.unlink(self.socket_path)
            except OSError:
                pass
        with contextlib.suppress(OSError):
            sock.close()

    def _prepare_dirs(self) -> None:
        try:
            for sub in ("", "worktrees", "envs", "locks", "reports"):
                (self.state_dir / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"cannot create state dir {self.state_dir}: {exc.strerror}") from exc

    async def _start_sandbox(self) -> None:
        """Probe bubblewrap once (health shows the outcome); ``sandbox = "bwrap"`` makes a
        missing sandbox fatal, ``auto`` refuses build phases without it, ``off`` is said
        everywhere."""
        from autopack.actors._install import poetry_binary, uv_binary
        from autopack.actors._sandbox import Sandbox, SandboxLimits, probe

        found = await trio.to_thread.run_sync(probe, self.settings.sandbox)
        if self.settings.sandbox == "bwrap" and found.mode != "bwrap":
            raise StartupError(f"sandbox = \"bwrap\" but {found.detail}")
        if found.mode == "bwrap":
            LOGGER.info("sandbox: bwrap (%s)", found.detail)
        else:
            LOGGER.warning("sandbox: %s (%s)", found.mode, found.detail)
        s = self.settings
        hide = [Path(p) for p in (s.api_key_file, self.config_file, self.socket_path) if p]
        # tools the daemon hands to runs (uv, poetry for the install step) must be visible
        # inside, even when the daemon is installed under /tmp, which the sandbox makes
        # private; poetry is a Python script: its whole virtualenv, read-only
        tools = [Path(p) for p in (uv_binary(),) if p]
        poetry = poetry_binary()
        if poetry:
            venv = Path(poetry).parent.parent
            tools.append(venv if (venv / "pyvenv.cfg").is_file() else Path(poetry))
        self.sandbox = Sandbox(
            probe=found, state_dir=self.state_dir, default_network=s.sandbox_network,
            limits=SandboxLimits(memory_mb=s.sandbox_memory_mb, processes=s.sandbox_processes,
                                 file_size_mb=s.sandbox_file_size_mb, cpu_s=s.sandbox_cpu_s),
            hide=tuple(hide),
            read_only=(*tools, *(Path(p) for p in s.sandbox_read_only)),
            writable=tuple(Path(p) for p in s.sandbox_writable))
        self.services.sandbox = self.view.sandbox = self.sandbox

    async def _serve(self, task_status: Any) -> None:
        await self._start_sandbox()
        await self.reconcile()
        sock = self._sock
        assert sock is not None
        assert self._health is not None
        socket_gid = group_with_access(sock)
        st = self.settings
        limits = ControlLimits(max_frame=st.max_frame_bytes, max_connections=st.max_connections,
                               max_reply=min(st.max_frame_bytes, DEFAULT_MAX_FRAME),
                               max_buffered_bytes=st.max_buffered_bytes,
                               frame_timeout_s=st.frame_timeout_s, idle_timeout_s=st.idle_timeout_s)
        self.control = ControlServer(
            sock, self.handler, max_frame=st.max_frame_bytes, limits=limits,
            allowed_uids=lambda: set(self.settings.allowed_uids),
            allowed_gids=lambda: set(self.settings.allowed_gids) | socket_gid)
        self.view.control = self.control
        sup = self.supervisor
        async with trio.open_nursery() as nursery:
            await sup.start_child(nursery, "classifier", self.classifier.serve)
            await sup.start_child(nursery, "memory", self.memory.serve, degradable=True)
            await sup.start_child(nursery, "scheduler", self.scheduler.serve)
            # not essential: a run whose base was not pinned resolves it when it starts; a
            # missing report can be asked for (``report``); pruning and sweeping can wait
            await sup.start_child(nursery, "base-pinner", self.pinner.serve, degradable=True)
            await sup.start_child(nursery, "reports", self.reports.serve, degradable=True)
            await sup.start_child(nursery, "retention", self.retention.serve, degradable=True)
            await sup.start_child(nursery, "worktree-sweep", self.sweeper.serve, degradable=True)
            await nursery.start(self.control.serve)
            self.health_port = await nursery.start(self._health.serve)
            nursery.start_soon(self._signals, nursery.cancel_scope)
            nursery.start_soon(self._housekeeping)
            interval = self.notifier.watchdog_interval()
            if interval and self.settings.watchdog:
                from ._notify import watchdog_loop

                nursery.start_soon(partial(watchdog_loop, self.notifier, interval,
                                           alive=self.heartbeat))
            LOGGER.info("autopackd %s ready: socket %s, health http://%s", VERSION,
                        self.socket_path, self._health_addr())
            self.notifier.ready(await self._status_line())
            task_status.started(self)

    async def _status_line(self) -> str:
        counts = await self.records.counts()
        return (f"{len(self.scheduler.active)} running, {counts.get('queued', 0)} queued, "
                f"limit {self.settings.max_concurrent_runs}")

    async def _housekeeping(self) -> None:
        """The supervisor loop's beat: liveness for the watchdog, STATUS= for systemctl."""
        last_status = ""
        while True:
            self.heartbeat.beat()
            if not self.store.alive:
                raise StoreDied("the store thread is gone")
            if self.store.write_error is not None:
                await self.store.probe_write()  # ready again as soon as a write succeeds
            try:
                status = await self._status_line()
            except StorageError:
                status = last_status
            if status != last_status:
                self.notifier.status(status)
                last_status = status
            await trio.sleep(1.0)

    # ---------------------------------------------------------------- startup pieces
    @property
    def socket_path(self) -> str:
        return self.settings.resolved_socket()

    def _control_socket(self) -> socket.socket:
        if self.listen_sock is not None:
            LOGGER.info("using the socket-activated control socket")
            return self.listen_sock
        try:
            sock = bind_unix_socket(self.socket_path, self.settings.socket_mode,
                                    self.settings.socket_group)
        except (OSError, KeyError) as exc:
            raise StartupError(f"cannot listen on {self.socket_path}: {exc}") from None
        st = os.stat(self.socket_path)
        self._sock_inode = (st.st_dev, st.st_ino)
        return sock

    def _health_addr(self) -> str:
        host, _, _ = self.settings.health_listen.rpartition(":")
        return f"{host}:{self.health_port}"

    def _health_server(self) -> HealthServer:
        dashboard = None
        if self.settings.dashboard:
            from .web import Dashboard

            host = self.settings.health_listen.rpartition(":")[0].strip("[]") or "127.0.0.1"
            dashboard = Dashboard(self, host=host).handle
        return self.view.http_server(self.settings.health_listen, dashboard=dashboard)

    async def reconcile(self) -> None:
        """After a crash: kill leftovers, mark orphaned runs interrupted, sweep, prune."""
        await reconcile(self.records, self.state_dir)
        await self.sweeper.sweep()
        await self.retention.apply()

    async def _signals(self, scope: Any) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self.reload()
                    continue
                LOGGER.info("signal %s: stopping (grace %.0f s)", signal.Signals(signum).name,
                            self.settings.grace_period_s)
                await self.shutdown(scope)
                return

    async def shutdown(self, scope: Any) -> None:
        """Stop accepting, drain runs at phase boundaries within the grace period, cancel."""
        self.stopping = True
        self.notifier.stopping()
        self.scheduler.stop_starting()
        if self.control is not None:
            await self.control.stop_accepting()
        with trio.move_on_after(self.settings.grace_period_s):
            await self.scheduler.idle()
        active = list(self.scheduler.active)
        scope.cancel()
        with trio.CancelScope(shield=True):
            for run_id in active:
                try:
                    run = await self.records.run(run_id)
                    if run["state"] == "running":
                        await self.records.set_run_state(run_id, "interrupted", "daemon stopped")
                except Exception:
                    LOGGER.exception("could not record run %s as interrupted", run_id)

    def reload(self) -> None:
        """SIGHUP: read the config again and swap in a snapshot with its live settings."""
        from ._config import ConfigError, load_settings

        self.notifier.reloading()
        try:
            fresh = load_settings(self.config_file)
        except ConfigError as exc:
            LOGGER.error("reload refused, keeping the old settings: %s", exc)
            self.notifier.ready()
            return
        changed = self.live.swap(fresh)
        if "log_level" in changed:
            from ._logging import set_log_level

            set_log_level(self.settings.log_level)
        LOGGER.info("reloaded settings: %s", ", ".join(changed) or "nothing changed")
        self.scheduler.poke()
        self.notifier.ready()


def group_with_access(sock: Any) -> set[int]:
    """The socket file's group, if the file grants its group read and write: whoever set
    ``SocketGroup=``/``socket_group`` with mode 0660 meant that group to use the daemon."""
    try:
        st = os.stat(sock.getsockname())
    except (OSError, TypeError, ValueError):
        return set()
    return {st.st_gid} if st.st_mode & 0o060 == 0o060 else set()


class _Started:
    """Passes ``started()`` on and notes that the daemon got ready (a later failure is not
    a failed start: the state dir it created is kept)."""

    def __init__(self, task_status: Any, daemon: Daemon) -> None:
        self.task_status, self.daemon = task_status, daemon

    def started(self, value: Any = None) -> None:
        self.daemon._ready = True
        self.task_status.started(value)


class StoreDied(Exception):
    """Raised when the store thread died: the daemon cannot work without it and exits."""

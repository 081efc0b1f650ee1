"""The daemon: composes store, actors, servers; answers control requests.

Start-up order (READY=1 is sent only at the end): state dir → store (migrated)
→ reconcile (kill leftovers of a dead daemon, interrupted runs, orphan
worktrees) → supervised actors (memory, classifier, scheduler) → control
socket → health endpoint → READY. Stop: SIGTERM/SIGINT → stop accepting,
let runs reach a phase boundary within the grace period, record the rest as
interrupted, exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import msgspec
import trio
from autopack.actors import _worktree as wt
from autopack.actors._llm import LLM, read_api_key
from autopack.actors._memory import MemoryActor, handle_get_context, handle_get_lessons
from autopack.actors._phase import PhaseRunner
from autopack.actors._pool import WorktreePool
from autopack.actors._proc import kill_group
from autopack.actors._run import RunServices, end_run_directly
from autopack.actors._scheduler import Scheduler
from autopack.protocol import (
    DEFAULT_MAX_FRAME,
    BackedUp,
    Backup,
    Cancel,
    Classification,
    ClassifyContext,
    ErrorCode,
    Follow,
    GetContext,
    GetDiff,
    GetHealth,
    GetLessons,
    GetReport,
    GetStats,
    GetStatus,
    Health,
    ListRuns,
    LogsEnd,
    Normalized,
    NormalizePlan,
    Ok,
    PhaseState,
    Report,
    Retry,
    RunList,
    RunStatus,
    SpecError,
    Stats,
    StorageError,
    Submit,
    Submitted,
    spec_to_builtins,
    validate_spec,
)
from autopack.protocol import Error as ProtoError

from . import _queries as q
from . import _runops as runops
from ._config import Settings
from ._control import Connection, ControlLimits, ControlServer, bind_unix_socket
from ._paging import MAX_PAGE_RUNS, fit_event, run_page
from ._records import Records
from ._report import build_report, render_markdown
from ._store import Store
from ._supervisor import Supervisor

LOGGER = logging.getLogger(__name__)
VERSION = "0.1.0"
TERMINAL = ("succeeded", "failed", "cancelled")
MEMORY_REQUESTS = frozenset({"context", "lessons"})


class StartupError(Exception):
    """Raised when the daemon cannot start (bad state dir, socket in use, …); exit status 2."""


def status_reply(run: dict[str, Any], sandbox: str = "") -> RunStatus:
    return RunStatus(
        sandbox=sandbox,
        run_id=run["id"], state=run["state"], reason=run["reason"], goal=run["goal"],
        repo=run["repo"], branch=run["branch"], arm=run["arm"], created_at=run["created_at"],
        started_at=run["started_at"], ended_at=run["ended_at"],
        phases=[PhaseState(id=p["id"], state=p["state"], attempts=p["attempts"], kind=p["kind"],
                           reason=p["reason"], commit=p["commit_sha"]) for p in run["phases"]],
    )


class Daemon:
    version = VERSION

    def __init__(self, settings: Settings, *, config_file: str | None = None,
                 listen_sock: Any = None, notifier: Any = None, redactor: Any = None) -> None:
        from ._notify import Heartbeat, Notifier

        self.settings = settings
        self.config_file = config_file
        self.listen_sock = listen_sock
        self.notifier = notifier if notifier is not None else Notifier(None)
        self.redactor = redactor
        self.heartbeat = Heartbeat(max_age_s=10.0)
        self.state_dir = Path(settings.state_dir).resolve()
        self.store = Store(str(self.state_dir / "autopack.db"),
                           synchronous=settings.store_synchronous.upper())
        self.records = Records(self.store)
        self.supervisor = Supervisor(limit=settings.restart_limit, window_s=settings.restart_window_s)
        self.memory = MemoryActor(
            str(self.state_dir / "autopack.db"), enabled=settings.enable_intention_context,
            deadline_s=settings.memory_deadline_ms / 1000, builder_bytes=settings.builder_context_bytes,
            doctor_bytes=settings.doctor_context_bytes)
        self.llm = self._make_llm()
        from autopack.actors.classifier import ClassifierActor

        self.classifier, self.classifier_mailbox = ClassifierActor.open()
        self.phase_runner = PhaseRunner(
            settings=settings, classify=self._classify_fn(), mitigate=self._mitigate_fn(),
            memory=self.memory.client(), llm=self.llm,
            mean_doctor_tokens=lambda: self.records.mean_doctor_tokens())
        self.services = RunServices(
            records=self.records, state_dir=self.state_dir, settings=settings,
            phase_runner=self.phase_runner,
            pool=WorktreePool(self.state_dir / "worktrees" / ".pool", enabled=settings.worktree_pool,
                              per_repo=settings.worktree_pool_size,
                              budget_bytes=settings.worktree_pool_budget_mb << 20))
        self.scheduler = Scheduler(self.services, limit=lambda: self.settings.max_concurrent_runs,
                                   crash_limit=lambda: self.settings.run_crash_limit)
        self.scheduler.on_run_end = self._after_run
        self.control: ControlServer | None = None
        self.health_port: int | None = None
        self.stopping = False
        self.sandbox: Any = None  # actors._sandbox.Sandbox, after the start-up probe
        self.started_at = time.time()
        self._rng = random.Random()
        self._metrics_cache: Any = None
        self._to_pin: list[tuple[str, str, str]] = []
        self._pin_wanted = trio.Event()
        self._ready = False
        self.dir_lock: Any = None  # _statedir.StateDirLock while running
        self._health: Any = None  # HealthServer, bound before anything is written
        self._sock: Any = None  # the control socket (bound or socket-activated)
        self._sock_inode: tuple[int, int] | None = None

    def _make_llm(self) -> LLM:
        """The Claude client shared by all runs; the key never leaves it (or reaches logs)."""
        from autopack.actors._sandbox import scrub_environ

        secret = read_api_key(api_key_file=self.settings.api_key_file)
        if secret is not None and self.redactor is not None:
            self.redactor.add_secret(secret.reveal())
        # read once: from here on it lives only in the client, not in /proc/<pid>/environ
        scrub_environ(["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"])
        return LLM(model=self.settings.model, max_tokens=self.settings.max_tokens,
                   base_url=self.settings.anthropic_base_url,
                   api_key=secret.reveal() if secret else None,
                   max_concurrency=self.settings.llm_max_concurrency,
                   prices=self.settings.prices,
                   daily_usd_budget=self.settings.daily_usd_budget,
                   daily_token_budget=self.settings.daily_token_budget,
                   daily_spent=self.records.spend_since,
                   min_output_tokens=self.settings.min_output_tokens,
                   count_tokens=self.settings.count_tokens)

    def _classify_fn(self) -> Any:
        """Run actors ask the classifier actor; if it does not answer, the failure is
        treated as unclassified (the Doctor takes over) and the run goes on."""
        from autopack.actors.classifier import request_classification

        async def classify(output: str, exit_code: int | None,
                           ctx: ClassifyContext) -> Classification:
            try:
                return await request_classification(self.classifier_mailbox, output, exit_code,
                                                     ctx, timeout_s=30)
            except (TimeoutError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                LOGGER.warning("classifier unavailable (%s); treating failure as unclassified", exc)
                return Classification(pattern=None, details={"classifier_error": str(exc)})

        return classify

    def _mitigate_fn(self) -> Any:
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
        from autopack.actors._install import uv_binary
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
        # tools the daemon hands to runs (uv for the install step) must be visible inside,
        # even when the daemon is installed under /tmp, which the sandbox makes private
        tools = [Path(p) for p in (uv_binary(),) if p]
        self.sandbox = Sandbox(
            probe=found, state_dir=self.state_dir, default_network=s.sandbox_network,
            limits=SandboxLimits(memory_mb=s.sandbox_memory_mb, processes=s.sandbox_processes,
                                 file_size_mb=s.sandbox_file_size_mb, cpu_s=s.sandbox_cpu_s),
            hide=tuple(hide),
            read_only=(*tools, *(Path(p) for p in s.sandbox_read_only)),
            writable=tuple(Path(p) for p in s.sandbox_writable))
        self.services.sandbox = self.sandbox

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
            sock, self, max_frame=st.max_frame_bytes, limits=limits,
            allowed_uids=lambda: set(self.settings.allowed_uids),
            allowed_gids=lambda: set(self.settings.allowed_gids) | socket_gid)
        async with trio.open_nursery() as nursery:
            await self.supervisor.start_child(nursery, "classifier", self.classifier.serve)
            await self.supervisor.start_child(nursery, "memory", self.memory.serve,
                                              degradable=True)
            await self.supervisor.start_child(nursery, "scheduler", self.scheduler.serve)
            # not essential: a run whose base was not pinned resolves it when it starts
            await self.supervisor.start_child(nursery, "base-pinner", self._pin_bases,
                                              degradable=True)
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

    def _control_socket(self) -> Any:
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

    def _health_server(self) -> Any:
        from ._health import HealthServer, json_body

        host, _, port = self.settings.health_listen.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"

        async def healthz() -> tuple[int, str, bytes]:
            return json_body(200, {"alive": True, "pid": os.getpid(), "version": VERSION,
                                   "sandbox": self.sandbox_mode()})

        async def readyz() -> tuple[int, str, bytes]:
            h = await self.health()
            return json_body(200 if h.ready else 503, msgspec.to_builtins(h))

        async def metrics() -> tuple[int, str, bytes]:
            from ._metrics import METRICS_CONTENT_TYPE

            return 200, METRICS_CONTENT_TYPE, await self.metrics_text()

        dashboard = None
        if self.settings.dashboard:
            from .web import Dashboard

            dashboard = Dashboard(self, host=host).handle
        return HealthServer(host, int(port or 0), {"/healthz": healthz, "/readyz": readyz,
                                                   "/metrics": metrics}, fallback=dashboard)

    async def reconcile(self) -> None:
        """After a crash: kill leftover process groups, mark orphaned running runs
        interrupted, sweep worktrees that belong to no live run."""
        from autopack.actors._sandbox import reap_leftovers

        # sandboxes an earlier daemon of this state dir left (its watcher normally ends them)
        for pid in await trio.to_thread.run_sync(reap_leftovers, self.state_dir):
            LOGGER.warning("killed a leftover sandbox process %d of an earlier daemon", pid)
        for proc in await self.records.take_stale_processes():
            if proc["boot_id"] and proc["boot_id"] != self.records.boot_id:
                continue  # recorded before a reboot: the pgid may now be someone else's
            if kill_group(proc["pgid"], signal.SIGKILL):
                LOGGER.warning("killed leftover process group %d of run %s (%s)", proc["pgid"],
                               proc["run_id"], proc["command"])
                await self.records.event(proc["run_id"], None, None, "leftover_killed",
                                         pgid=proc["pgid"], command=proc["command"])
        lock_dir = self.state_dir / "locks"
        for run_id in await self.records.runs_in("running"):
            if not wt.lock_is_held(lock_dir, run_id):
                await self.records.set_run_state(run_id, "interrupted", "daemon died while running")
        await self._sweep_worktrees()
        await self.apply_retention()

    async def apply_retention(self) -> int:
        """Delete the branches and reports of runs that ended more than ``retention_days``
        ago (off unless set). The run records and events stay. Returns how many were pruned."""
        days = self.settings.retention_days
        if not days:
            return 0
        cutoff = time.time() - days * 86400
        pruned = 0
        for run in await self.store.read(q.ended_runs_before, cutoff):
            if run["branch"] and wt.is_git_repo(run["repo"]):
                try:
                    await wt.git(run["repo"], "branch", "-D", "--quiet", run["branch"])
                except wt.GitError:
                    pass  # already gone (or never created)
            for suffix in (".md", ".json"):
                (self.state_dir / "reports" / f"{run['id']}{suffix}").unlink(missing_ok=True)
            await self.store.call(q.mark_pruned, run["id"], time.time())
            pruned += 1
        if pruned:
            LOGGER.info("retention: pruned branches and reports of %d run(s)", pruned)
        return pruned

    async def _sweep_worktrees(self) -> None:
        live = set(await self.records.runs_in("queued", "running", "interrupted"))
        root = self.state_dir / "worktrees"
        lock_dir = self.state_dir / "locks"
        for path in sorted(root.iterdir()) if root.exists() else []:
            run_id = path.name
            if run_id == ".pool":
                continue
            if run_id in live or wt.lock_is_held(lock_dir, run_id):
                continue
            repo = None
            try:
                repo = (await self.records.run(run_id))["repo"]
            except q.UnknownRun:
                pass
            if repo and wt.is_git_repo(repo):
                await wt.remove_worktree(Path(repo), path)
            shutil.rmtree(path, ignore_errors=True)
            env = self.state_dir / "envs" / run_id
            shutil.rmtree(env, ignore_errors=True)
            LOGGER.info("swept orphan worktree %s", path)
        scratch_root = self.state_dir / "tmp"  # runs' private /tmp (actors._sandbox.scratch_dir)
        for path in sorted(scratch_root.iterdir()) if scratch_root.exists() else []:
            if path.name not in live and not wt.lock_is_held(lock_dir, path.name):
                shutil.rmtree(path, ignore_errors=True)

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
        """SIGHUP: re-read the settings that can change live."""
        from ._config import LIVE_RELOADABLE, ConfigError, load_settings

        self.notifier.reloading()
        try:
            fresh = load_settings(self.config_file)
        except ConfigError as exc:
            LOGGER.error("reload refused, keeping the old settings: %s", exc)
            self.notifier.ready()
            return
        changed = []
        for key in sorted(LIVE_RELOADABLE):
            if getattr(fresh, key) != getattr(self.settings, key):
                setattr(self.settings, key, getattr(fresh, key))
                changed.append(key)
        if "log_level" in changed:
            from ._logging import set_log_level

            set_log_level(self.settings.log_level)
        LOGGER.info("reloaded settings: %s", ", ".join(changed) or "nothing changed")
        self.scheduler.poke()
        self.notifier.ready()

    # ================================================================ requests
    async def dispatch(self, conn: Connection, req: Any) -> bool | None:
        """Answer one request. Return ``False`` to close the connection."""
        try:
            req = await self._resolve_run_ref(req)
            match req:
                case Submit():
                    await conn.send(await self.submit(req))
                case GetStatus(run_id=run_id):
                    st = status_reply(await self.records.run(run_id), self.sandbox_mode())
                    spent = sum((await self.records.tokens(run_id)).values())
                    await conn.send(msgspec.structs.replace(st, tokens=spent))
                case ListRuns():
                    await conn.send(await self.list_page(req))
                case Cancel(run_id=run_id):
                    await conn.send(await self.cancel(run_id))
                case Follow():
                    await self.follow(conn, req)
                case GetReport(run_id=run_id):
                    data = await self.report(run_id)
                    await conn.send(Report(data=data, markdown=render_markdown(data)))
                case GetHealth():
                    await conn.send(await self.health())
                case Retry():
                    run_id = await runops.retry(self.store, req)
                    self.scheduler.poke()
                    await conn.send(Submitted(run_id=run_id))
                case GetDiff():
                    await conn.send(await runops.diff(self.store, req))
                case Backup(path=path):
                    await conn.send(await self.backup(path))
                case NormalizePlan() | GetContext() | GetLessons() | GetStats():
                    reply = await self.extension_request(req)
                    if isinstance(reply, ProtoError):
                        await conn.error(reply.code, reply.message, reply.details)
                    else:
                        await conn.send(reply)
                case _:
                    await conn.error(ErrorCode.BAD_FRAME, f"unexpected message {type(req).__name__}")
                    return False
        except q.UnknownRun as exc:
            await conn.error(ErrorCode.UNKNOWN_RUN, f"no run with id {exc.args[0]!r}")
        except runops.AmbiguousRun as exc:
            await conn.error(ErrorCode.AMBIGUOUS_RUN, str(exc))
        except (runops.RetryRefused, runops.DiffUnavailable) as exc:
            await conn.error(ErrorCode.INVALID_STATE, str(exc))
        except SpecError as exc:
            await conn.error(ErrorCode.INVALID_SPEC, f"invalid run spec ({len(exc.problems)} problem(s))",
                             [f"{p}: {r}" if p else r for p, r in exc.problems])
        except RequestError as exc:
            await conn.error(exc.code, exc.message, exc.details)
        except StorageError as exc:
            await conn.error(ErrorCode.STORAGE, f"{exc}; nothing was changed, try again later")
        return None

    async def _resolve_run_ref(self, req: Any) -> Any:
        """Every request naming a run accepts a short id or ``latest`` (see ``_runops``)."""
        ref = getattr(req, "run_id", None)
        if not isinstance(ref, str):
            return req
        full = await self.store.call(runops.resolve_run_id, ref)
        return req if full == ref else msgspec.structs.replace(req, run_id=full)

    async def submit(self, req: Submit) -> Submitted:
        if self.stopping:
            raise RequestError(ErrorCode.SHUTTING_DOWN, "the daemon is stopping; submit again later")
        spec = validate_spec(msgspec.to_builtins(req.spec))  # same checks as a file
        repo, problems = check_repo(req.repo or spec.repo)
        if problems:
            raise RequestError(ErrorCode.INVALID_SPEC, "invalid run spec", problems)
        self._check_model_configured(spec)
        arm = req.arm or self._pick_arm()
        run_id = await self.records.submit(spec, repo, arm)
        self.scheduler.poke()
        self._to_pin.append((run_id, repo, spec.base))  # after the ack's commit, off its path
        self._pin_wanted.set()
        return Submitted(run_id=run_id)

    async def _pin_bases(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Resolve submitted runs' base refs to commits soon after submit, so a run that waits
        in the queue still branches from what the repository was when it was submitted (a
        later commit in the user's checkout does not move it; the window is this task's 0.1 s
        gathering delay). A burst of submits against one repository costs one
        ``git rev-parse`` per 0.1 s, not one per run: the submit path stays fast."""
        task_status.started()
        while True:
            await self._pin_wanted.wait()
            await trio.sleep(0.1)  # gather a burst: its runs share one rev-parse per repository
            self._pin_wanted = trio.Event()
            batch, self._to_pin = self._to_pin, []
            resolved: dict[tuple[str, str], str | None] = {}
            pins = []
            for run_id, repo, base in batch:
                key = (repo, base)
                if key not in resolved:
                    try:
                        resolved[key] = await wt.resolve_base(Path(repo), base)
                    except wt.GitError:
                        resolved[key] = None  # the run actor reports a bad ref when it starts
                if resolved[key]:
                    pins.append((run_id, resolved[key]))
            if pins:
                await self.store.call(q.pin_base_commits, pins)

    def _check_model_configured(self, spec: Any) -> None:
        """Refuse build phases up front when no model can be reached at all (no API key
        and no model endpoint): they would only fail when they run."""
        build = [p.id for p in spec.phases if p.kind == "build"]
        if not build or self.llm.has_key or self.settings.anthropic_base_url \
                or os.environ.get("ANTHROPIC_BASE_URL"):
            return
        raise RequestError(ErrorCode.INVALID_SPEC, (
            f"build phase {build[0]!r} needs a model, but autopackd has no Anthropic API key "
            "and no model endpoint: set ANTHROPIC_API_KEY (or api_key_file) or "
            "anthropic_base_url for the daemon, or make the phase kind = \"command\""))

    def _pick_arm(self) -> str:
        frac = self.settings.ab_fraction
        return "baseline" if frac > 0 and self._rng.random() < frac else "hardened"

    async def cancel(self, run_id: str) -> Ok:
        """End a run in any non-terminal state (queued, running, interrupted; also one whose
        actor keeps crashing): the actor is cancelled if one executes it, and the end is
        recorded here if no actor did."""
        run = await self.records.run(run_id)
        state = run["state"]
        if state in TERMINAL:
            raise RequestError(ErrorCode.INVALID_STATE, f"run {run_id} already ended ({state})")
        ended = self.scheduler.cancel(run_id)  # also keeps the scheduler from (re)starting it
        try:
            if ended is not None:
                with trio.move_on_after(30):  # the run's processes are being killed
                    await ended.wait()
            run = await self.records.run(run_id)
            if run["state"] not in TERMINAL:
                await end_run_directly(self.records, run_id, "cancelled", "cancelled by user")
            run = await self.records.run(run_id)
        finally:
            self.scheduler.cancel_done(run_id)
        if run["state"] != "cancelled":
            raise RequestError(ErrorCode.INVALID_STATE,
                               f"run {run_id} ended {run['state']} before the cancel took effect")
        return Ok(message=f"run {run_id} cancelled")

    async def backup(self, path: str) -> BackedUp:
        """``autopackctl backup PATH``: an online copy of the database (see ``_integrity``)."""
        from ._integrity import BackupError, online_backup

        try:
            size = await trio.to_thread.run_sync(online_backup, self.state_dir / "autopack.db",
                                                 Path(path))
        except BackupError as exc:
            raise RequestError(ErrorCode.INVALID_REQUEST, str(exc)) from None
        LOGGER.info("backup written to %s (%d bytes)", path, size)
        return BackedUp(path=path, bytes=size)

    async def list_page(self, req: ListRuns) -> RunList:
        """One page of runs, newest first, never more than a frame (see ``_paging``)."""
        limit = min(max(req.limit, 1), MAX_PAGE_RUNS)
        rows = await self.records.list_runs(req.state, limit + 1, states=req.states,
                                            before=req.before)
        return run_page([(r["seq"], status_reply(r, self.sandbox_mode())) for r in rows], limit,
                        self.settings.max_frame_bytes)

    async def follow(self, conn: Connection, req: Follow) -> None:
        """``logs [-f]``: the run's events, from the one event stream the dashboard's live
        pages read too, one frame per event (reads in pages of 1,000); then ``LogsEnd`` (at
        once without ``follow``, when the run ends with it)."""
        from .web import event_stream

        run = await self.records.run(req.run_id)  # UnknownRun before anything is sent
        after = req.after
        budget = req.limit if req.limit > 0 and not req.follow else None
        page = 1000 if budget is None else min(1000, budget)
        async for events, caught_up in event_stream(self.store, after=after, run_id=req.run_id,
                                                    fetch=q.events_after, batch=page):
            for ev in events if budget is None else events[:budget]:
                after = ev["id"]
                await conn.send(fit_event(ev, self.settings.max_frame_bytes))
            if budget is not None:
                budget -= len(events)
                if budget <= 0:
                    more = bool(await self.records.events_after(req.run_id, after, 1))
                    run = await self.records.run(req.run_id)
                    await conn.send(LogsEnd(state=run["state"], last_id=after, more=more))
                    return
            if not caught_up:
                continue
            run = await self.records.run(req.run_id)
            if not req.follow or run["state"] in TERMINAL:
                await conn.send(LogsEnd(state=run["state"], last_id=after))
                return

    async def report(self, run_id: str) -> dict[str, Any]:
        run = await self.records.run(run_id)
        events = await self.records.all_events(run_id)
        tokens = await self.records.tokens(run_id)
        calls = await self.records.llm_calls(run_id)
        commits: list[dict[str, str]] = []
        if run["base_commit"] and wt.is_git_repo(run["repo"]):
            try:
                commits = await wt.branch_commits(Path(run["repo"]), run["base_commit"],
                                                  run["branch"])
            except wt.GitError:
                commits = []
        return build_report(run, events, tokens, commits, calls=calls)

    async def _after_run(self, run_id: str, state: str) -> None:
        data = await self.report(run_id)
        base = self.state_dir / "reports" / run_id
        base.with_suffix(".json").write_bytes(msgspec.json.format(msgspec.json.encode(data)))
        base.with_suffix(".md").write_text(render_markdown(data), encoding="utf-8")
        await self.records.set_run_fields(run_id, report_path=str(base.with_suffix(".md")))
        await self.records.event(run_id, None, None, "report_written", path=str(base) + ".md")
        await self.apply_retention()

    async def _normalize_llm(self, req: NormalizePlan) -> Normalized:
        from autopack.actors._doctor import normalize_with_llm
        from autopack.actors._llm import LLMError
        from autopack.actors._normalize import PlanError, result_from_raw_spec

        try:
            raw = await normalize_with_llm(self.llm, req.plan, req.repo)
            result = result_from_raw_spec(raw, repo=req.repo, source="the LLM")
        except LLMError as exc:
            raise RequestError(ErrorCode.UNAVAILABLE, f"Claude could not normalize the plan: {exc}") from None
        except (SpecError, PlanError) as exc:
            raise RequestError(ErrorCode.INVALID_PLAN, f"the LLM's spec is invalid: {exc}") from None
        return Normalized(spec=spec_to_builtins(result.spec), confidence=result.confidence,
                          warnings=result.warnings,
                          phases=[msgspec.to_builtins(p) for p in result.phases])

    async def health(self) -> Health:
        """What each part is doing, as seen: a part that crashed recently, or whose last
        request failed, is degraded (with its restart count and last error), not "ok"."""
        parts: dict[str, str] = {"store": self._store_state()}
        details: dict[str, dict[str, Any]] = {}
        recent = anyio.current_time() - self.settings.restart_window_s
        for child in self.supervisor.statistics():
            parts[child.name] = "ok" if child.state == "up" else (
                "degraded" if child.degradable else "down")
            if child.restarts:
                details[child.name] = {"restarts": child.restarts, "errors": child.restarts,
                                       "last_error": child.last_error}
                if parts[child.name] == "ok" and (child.last_crash_at or 0) >= recent:
                    parts[child.name] = "degraded"  # crashing and coming back is not "ok"
        extra = self.extra_health_parts()
        if parts.get("memory") != "degraded":
            parts.update(extra)
        else:
            parts.update({k: v for k, v in extra.items() if k != "memory"})
        mem = self.memory.statistics()
        if mem.errors or mem.timeouts or mem.restarts:
            crashed = details.get("memory", {})
            details["memory"] = {"restarts": max(mem.restarts, crashed.get("restarts", 0)),
                                 "errors": mem.errors + mem.timeouts + crashed.get("errors", 0),
                                 "last_error": crashed.get("last_error") or mem.last_error}
        self._request_health(parts, details)
        if self.store.write_error is not None:
            details["store"] = {"restarts": 0, "errors": self.store.write_failures,
                                "last_error": self.store.write_error}
        degraded = sorted(k for k, v in parts.items() if v == "degraded")
        required_down = [k for k, v in parts.items() if v == "down"]
        counts = await self.records.counts() if parts["store"] == "ok" else {}
        return Health(alive=True, ready=not required_down and not self.stopping, parts=parts,
                      degraded=degraded, runs=counts, version=VERSION, details=details,
                      sandbox=self.sandbox_mode(), sandbox_detail=self.sandbox_detail(),
                      endpoints={"health": f"http://{self._health_addr()}",
                                 "socket": self.socket_path})

    def sandbox_mode(self) -> str:
        """``bwrap``, ``unavailable`` or ``off`` (``""`` before the start-up probe)."""
        return self.sandbox.mode if self.sandbox is not None else ""

    def sandbox_detail(self) -> str:
        return self.sandbox.probe.detail if self.sandbox is not None else ""

    def _store_state(self) -> str:
        if not self.store.alive:
            return "down"
        return "down" if self.store.write_error is not None else "ok"

    def _request_health(self, parts: dict[str, str], details: dict[str, dict[str, Any]]) -> None:
        """Parts whose requests end in internal errors: memory for its requests, ``control``
        for the rest. Degraded while the latest such request failed."""
        if self.control is None:
            return
        out = self.control.outcomes
        for tag, errors in out.errors.items():
            part = "memory" if tag in MEMORY_REQUESTS else "control"
            info = details.setdefault(part, {"restarts": 0, "errors": 0, "last_error": None})
            info["errors"] += errors
            if out.in_a_row.get(tag):
                info["last_error"] = f"{tag}: {out.last_error[tag]}"
                if parts.get(part, "ok") == "ok":
                    parts[part] = "degraded"
            elif info["last_error"] is None:
                info["last_error"] = f"{tag}: {out.last_error[tag]}"
        parts.setdefault("control", "ok")

    def extra_health_parts(self) -> dict[str, str]:
        mem = self.memory.statistics().state
        parts = {"memory": {"ok": "ok", "disabled": "disabled"}.get(mem, "degraded")}
        llm = self.llm.statistics()
        parts["llm"] = ("no key" if not self.llm.has_key else
                        "degraded" if llm.breaker_state != "closed" else "ok")
        return parts

    async def metrics_text(self) -> bytes:
        from ._metrics import render_metrics
        from ._stats import MetricsCache, metrics_snapshot

        if self._metrics_cache is None:
            self._metrics_cache = MetricsCache()

        ctl = self.control.statistics() if self.control else None
        snapshot = await self.store.read(
            metrics_snapshot,
            queue_depth=(await self.records.counts()).get("queued", 0),
            memory_degraded=self.extra_health_parts().get("memory") == "degraded",
            actor_restarts=self.supervisor.total_restarts(),
            control_connections_total=ctl.connections_total if ctl else 0,
            control_connections_active=ctl.connections_active if ctl else 0,
            version=VERSION, cache=self._metrics_cache,
        )
        health = await self.health()
        ctl_stats = ctl
        extra = {
            "part_degraded": {k: int(v == "degraded") for k, v in health.parts.items()},
            "part_down": {k: int(v == "down") for k, v in health.parts.items()},
            "request_errors": dict(self.control.outcomes.errors) if self.control else {},
            "store_write_failures": self.store.write_failures,
            "run_actor_crashes": self.scheduler.statistics().actor_crashes,
        }
        if ctl_stats is not None:
            extra.update(control_rejected_busy=ctl_stats.rejected_busy,
                         control_timeouts=ctl_stats.timeouts,
                         control_buffered_bytes=ctl_stats.buffered_bytes,
                         control_invalid_requests=ctl_stats.invalid_requests,
                         control_replies_too_large=ctl_stats.replies_too_large)
        return render_metrics(msgspec.structs.replace(snapshot, **extra))

    async def extension_request(self, req: Any) -> Any:
        match req:
            case GetContext():
                run = await self.records.run(req.run_id)
                current = next((p["id"] for p in run["phases"] if p["state"] == "running"), None)
                if current is None:
                    current = next((p["id"] for p in run["phases"] if p["state"] == "queued"), None)
                return await handle_get_context(self.memory.client(), req, current_phase=current)
            case GetLessons():
                return await handle_get_lessons(self.memory.client(), req)
            case GetStats():
                from ._stats import compute_stats

                since = time.time() - req.since_s if req.since_s else None
                data = await self.store.read(compute_stats, since_ts=since, by_arm=req.by_arm)
                return Stats(data=data)
            case NormalizePlan():
                return await self.normalize(req)
        raise RequestError(ErrorCode.NOT_SUPPORTED, f"{type(req).__name__} is not supported")

    async def normalize(self, req: NormalizePlan) -> Normalized:
        """Normalize a raw plan and answer with the spec to review; no run is created."""
        from autopack.actors._normalize import PlanError, normalize_plan

        if len(req.plan.encode("utf-8", "replace")) > self.settings.max_frame_bytes:
            raise RequestError(ErrorCode.INVALID_PLAN, "the plan is too large")
        if req.repo and not wt.is_git_repo(req.repo):
            raise RequestError(ErrorCode.INVALID_PLAN, f"{req.repo} is not a git repository")
        if req.llm:
            return await self._normalize_llm(req)
        try:
            result = await trio.to_thread.run_sync(
                lambda: normalize_plan(req.plan, Path(req.repo) if req.repo else None))
        except PlanError as exc:
            raise RequestError(ErrorCode.INVALID_PLAN, str(exc)) from None
        return Normalized(spec=spec_to_builtins(result.spec), confidence=result.confidence,
                          warnings=result.warnings,
                          phases=[msgspec.to_builtins(p) for p in result.phases])


def group_with_access(sock: Any) -> set[int]:
    """The socket file's group, if the file grants its group read and write: whoever set
    ``SocketGroup=``/``socket_group`` with mode 0660 meant that group to use the daemon."""
    try:
        st = os.stat(sock.getsockname())
    except (OSError, TypeError, ValueError):
        return set()
    return {st.st_gid} if st.st_mode & 0o060 == 0o060 else set()


def check_repo(repo: str | None) -> tuple[str, list[str]]:
    """The repository's real path and the problems that make it unusable (none = usable)."""
    if not repo:
        return "", ["repo: no repository given (spec 'repo' or submit --repo)"]
    if not os.path.isabs(repo):
        return repo, [f"repo: must be an absolute path on the daemon's host, got {repo!r}"]
    if not os.path.isdir(repo):
        return repo, [f"repo: {repo} does not exist or is not a directory"]
    if not wt.is_git_repo(repo):
        return repo, [f"repo: {repo} is not a git repository"]
    return os.path.realpath(repo), []


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


class RequestError(Exception):
    """Raised by a handler to answer with an ``Error`` reply (the client's fault or a refusal)."""

    def __init__(self, code: ErrorCode | str, message: str, details: list[str] | None = None) -> None:
        self.code, self.message, self.details = str(code), message, details or []
        super().__init__(message)

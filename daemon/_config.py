"""Settings: TOML file, then ``AUTOPACK_*`` environment variables, then flags.

Pure code (no trio, no I/O besides reading the config file). Every setting is
a field of :class:`Settings` with a default and a one-line doc in
``SETTING_DOCS``; ``autopackd --help`` prints them all.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
from autopack.protocol._paths import default_socket_for as default_socket_for
from autopack.protocol._paths import default_state_dir as default_state_dir

DEFAULT_AUTO_MITIGATE = ["python_missing_dep", "node_missing_dep", "rate_limited", "network_timeout"]


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One immutable snapshot of the daemon's settings (a reload swaps in a new one,
    see :class:`LiveSettings`)."""

    state_dir: str = msgspec.field(default_factory=default_state_dir)
    socket: str = ""  # "" = derived, see default_socket_for()
    socket_mode: int = 0o600
    socket_group: str | None = None
    allowed_uids: list[int] = []
    allowed_gids: list[int] = []
    max_frame_bytes: int = 1024 * 1024
    max_connections: int = 256
    max_buffered_bytes: int = 32 * 1024 * 1024
    frame_timeout_s: float = 10.0
    idle_timeout_s: float = 600.0
    run_crash_limit: int = 3
    health_listen: str = "127.0.0.1:7878"
    dashboard: bool = True
    dashboard_auth: str = "auto"  # auto | token
    dashboard_token_file: str | None = None
    dashboard_max_streams: int = 16
    wedged_after_s: float = 900.0
    max_concurrent_runs: int = 4
    auto_mitigate: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_AUTO_MITIGATE))
    enable_failure_hardening: bool = True
    enable_intention_context: bool = True
    ab_fraction: float = 0.0
    grace_period_s: float = 10.0
    restart_limit: int = 5  # R restarts ...
    restart_window_s: float = 60.0  # ... in T seconds, then exit non-zero
    min_free_disk_mb: int = 500
    store_synchronous: str = "normal"  # normal: survives kill -9 | full: also power loss (fsync per commit)
    worktree_pool: bool = True
    worktree_pool_size: int = 4  # ready worktrees kept per busy repository
    worktree_pool_budget_mb: int = 2048  # disk the ready worktrees may use, all repositories
    retention_days: float | None = None  # delete ended runs' branches/reports older than this
    memory_deadline_ms: int = 250
    builder_context_bytes: int = 2048
    doctor_context_bytes: int = 512
    default_doctor_tokens: int = 11_000  # 'tokens avoided' value until real Doctor calls are measured
    drift_policy: str = "revert"  # revert | fail
    model: str = "claude-sonnet-4-6"
    max_tokens: int = 8192
    anthropic_base_url: str | None = None
    api_key_file: str | None = None  # e.g. $CREDENTIALS_DIRECTORY/anthropic_api_key
    builder_max_turns: int = 30
    builder_attempt_wall_s: float = 1200
    builder_attempt_tokens: int | None = None  # tokens per Builder attempt; None = only the run budget
    llm_max_concurrency: int = 4
    prices: dict[str, list[float]] = {}  # model -> [usd per Mtok input, output, cache write, cache read]
    daily_usd_budget: float | None = None  # all runs, per UTC day
    daily_token_budget: int | None = None  # all runs, per UTC day
    min_output_tokens: int = 256  # a call whose max_tokens would shrink below this is refused
    count_tokens: bool = True  # count each call's input with the API before sending it
    builder_context_editing: str = "ours"  # ours | api | off: clearing old tool results
    builder_retry_model: str = ""  # a cheaper model for classifier-named retries; "" = off
    builder_retry_model_on: str = "precise"  # precise (file:line named) | named (any pattern)
    watchdog: bool = True
    log_format: str = "text"  # text | json
    log_level: str = "INFO"
    sandbox: str = "auto"  # auto | bwrap | off
    sandbox_network: str = "install"  # none | install | all (a run's spec may set its own)
    sandbox_memory_mb: int = 8192
    sandbox_processes: int = 2048
    sandbox_file_size_mb: int = 4096
    sandbox_cpu_s: int = 3600
    sandbox_read_only: list[str] = []  # extra host paths a sandbox may read (e.g. a wheelhouse)
    sandbox_writable: list[str] = []  # extra host paths a sandbox may write (a shared cache)

    def resolved_socket(self) -> str:
        return self.socket or default_socket_for(self.state_dir)


SETTING_DOCS: dict[str, str] = {
    "state_dir": "directory for the database, worktrees, reports and locks",
    "socket": "control socket path (default: $RUNTIME_DIRECTORY/autopackd.sock or <state_dir>/autopackd.sock)",
    "socket_mode": "permission bits of the control socket (0o600; 0o660 with socket_group)",
    "socket_group": "group that owns the socket and may use it",
    "allowed_uids": "extra uids allowed on the control socket (own uid and root always are)",
    "allowed_gids": "gids whose members may use the control socket (the socket file's group is allowed by itself when the mode gives it read-write)",
    "max_frame_bytes": "largest control frame accepted (bytes); replies are capped at 1 MiB, what every client accepts",
    "max_connections": "control connections served at once; more are answered 'busy' and closed",
    "max_buffered_bytes": "bytes of unfinished request frames held across all connections; a connection that would exceed it is answered 'busy' and closed",
    "frame_timeout_s": "a request frame, once begun, must arrive whole within this (else 'timeout' and closed)",
    "idle_timeout_s": "a control connection that sends no request for this long is closed",
    "run_crash_limit": "a run whose actor crashes this many times in a row ends failed with the reason",
    "health_listen": "host:port of the HTTP health endpoint; loopback; port 0 picks one",
    "dashboard": "serve the read-only web dashboard (/, /runs/<id>, /overview) on health_listen",
    "dashboard_auth": "'auto': a token is required when health_listen is not loopback; 'token': always",
    "dashboard_token_file": "file holding the dashboard token (default: $CREDENTIALS_DIRECTORY/dashboard_token)",
    "dashboard_max_streams": "live dashboard connections (Server-Sent Events) served at once; more get 503",
    "wedged_after_s": "a running run with no event for longer than this is shown as looking wedged",
    "max_concurrent_runs": "runs executed at once; the rest wait in submit order (live-reloadable)",
    "auto_mitigate": "pattern ids whose mitigation may act by itself (comma-separated in env)",
    "enable_failure_hardening": "deterministic classifier + mitigations before any Doctor call",
    "enable_intention_context": "inject the memory actor's bounded intention context into prompts",
    "ab_fraction": "fraction of new runs assigned to the baseline arm (hardening and context off)",
    "grace_period_s": "on SIGTERM, how long running phases get to reach a checkpoint",
    "restart_limit": "restarts of one crashed child (classifier, scheduler, control, ...) allowed within restart_window_s; one more and the daemon exits 1 (memory is restarted forever)",
    "restart_window_s": "window for restart_limit (seconds, per child)",
    "min_free_disk_mb": "free disk required before a run and each phase starts",
    "store_synchronous": "'normal': an acknowledged submit survives kill -9 of the daemon; 'full': it also "
                         "survives a power cut (one fsync per group commit, shared by the writes of a batch)",
    "worktree_pool": "keep ready worktrees per repository so a run starts without a checkout",
    "worktree_pool_size": "ready worktrees kept per busy repository (ended runs' worktrees are recycled, "
                          "fresh ones checked out in parallel)",
    "worktree_pool_budget_mb": "disk space the pool's ready worktrees may use, all repositories together",
    "retention_days": "delete branches and reports of runs ended longer ago than this (off by default)",
    "memory_deadline_ms": "deadline of every request to the memory actor",
    "builder_context_bytes": "intention context bound for the Builder (UTF-8 bytes)",
    "doctor_context_bytes": "intention context bound for the Doctor (UTF-8 bytes)",
    "default_doctor_tokens": "tokens a Doctor call is assumed to cost until real ones are measured",
    "drift_policy": "files changed outside a phase's scope: 'revert' them or 'fail' the attempt",
    "model": "Claude model for the Builder and Doctor",
    "max_tokens": "max output tokens per LLM call",
    "anthropic_base_url": "Messages API base URL (ANTHROPIC_BASE_URL works too)",
    "api_key_file": "file holding the API key (default: $CREDENTIALS_DIRECTORY/anthropic_api_key)",
    "builder_max_turns": "Builder turns per attempt",
    "builder_attempt_wall_s": "wall time per Builder attempt",
    "builder_attempt_tokens": "tokens one Builder attempt may spend (unset: only the run's token_budget)",
    "llm_max_concurrency": "LLM calls in flight across all runs",
    "prices": "model -> [USD per million tokens: input, output, cache write, cache read]; overrides or extends the built-in table (autopack.actors._budget)",
    "daily_usd_budget": "USD all runs together may spend per UTC day (unset: no daily limit); a call that could pass it is not made",
    "daily_token_budget": "tokens all runs together may spend per UTC day (unset: no daily limit)",
    "min_output_tokens": "smallest max_tokens a call may shrink to in order to fit a budget; below it the call is refused and the run ends",
    "builder_retry_model": "a cheaper model for the Builder's retries that the classifier named (hardened arm), priced at its own row of the price table; empty: off (the default: its success on real retries is not measured by the bench, see bench/ab/README.md)",
    "builder_retry_model_on": "which retries go to builder_retry_model: 'precise' (the classifier named a file and line, and a hint) or 'named' (any pattern with a hint)",
    "builder_context_editing": "clear old tool results from long Builder conversations (hardened arm): 'ours' (autopack clears them, keeping each tool_use/tool_result pair), 'api' (the API's context editing, beta) or 'off'; see bench/prune.py",
    "count_tokens": "count each call's input tokens with the API's count_tokens endpoint before sending it (off: a conservative local estimate)",
    "watchdog": "send WATCHDOG=1 to systemd when WatchdogSec is set",
    "log_format": "text or json (journald prefixes are added under systemd)",
    "log_level": "DEBUG, INFO, WARNING, ERROR",
    "sandbox": "auto (bubblewrap when it works here, else build phases are refused), bwrap "
               "(refuse to start without it), off (commands run unconfined; status and reports say so)",
    "sandbox_network": "network inside a run's sandbox unless its spec says: none, install "
                       "(install step, mitigations, fix commands only) or all",
    "sandbox_memory_mb": "address-space limit per process in the sandbox (MiB; 0 = none)",
    "sandbox_processes": "process limit of the sandbox's user (RLIMIT_NPROC; 0 = none; root is exempt)",
    "sandbox_file_size_mb": "largest file a sandboxed process may write (MiB; 0 = none)",
    "sandbox_cpu_s": "CPU seconds per sandboxed process (0 = none)",
    "sandbox_read_only": "extra host paths visible read-only in every sandbox, e.g. a local "
                         "wheelhouse under /tmp (comma-separated in env)",
    "sandbox_writable": "extra host paths every sandbox may write, e.g. a shared cache "
                        "(comma-separated in env); they are shared by all runs",
}

LIVE_RELOADABLE = {
    "max_concurrent_runs", "auto_mitigate", "enable_failure_hardening", "enable_intention_context",
    "ab_fraction", "min_free_disk_mb", "retention_days", "memory_deadline_ms", "drift_policy",
    "builder_max_turns", "builder_attempt_wall_s", "wedged_after_s", "restart_limit", "restart_window_s", "builder_attempt_tokens", "log_level", "default_doctor_tokens", "grace_period_s",
}


class LiveSettings:
    """The daemon's current settings: a frozen :class:`Settings` snapshot that a reload
    replaces whole, in one assignment (atomic for every reader under trio).

    A reader takes ``live.current`` once per decision and uses that snapshot for the
    whole decision, so it never sees half of a reload. Holders of a copy (the run
    actors' services, the memory actor's deadline) subscribe with :meth:`on_swap`.
    """

    def __init__(self, settings: Settings) -> None:
        self.current = settings
        self._listeners: list[Callable[[Settings], None]] = []

    def on_swap(self, listener: Callable[[Settings], None]) -> None:
        """Call ``listener(snapshot)`` after every swap (synchronously, in the swap)."""
        self._listeners.append(listener)

    def swap(self, fresh: Settings) -> list[str]:
        """Take the :data:`LIVE_RELOADABLE` values of ``fresh`` (the others need a
        restart); returns the names that changed (none: nothing is swapped)."""
        old = self.current
        changed = sorted(k for k in LIVE_RELOADABLE if getattr(fresh, k) != getattr(old, k))
        if not changed:
            return []
        self.current = msgspec.structs.replace(old, **{k: getattr(fresh, k) for k in changed})
        for listener in self._listeners:
            listener(self.current)
        return changed


class ConfigError(Exception):
    """Raised by :func:`load_settings` for a bad file, variable or flag (message says which)."""


def _coerce_env(field: str, value: str, current: Any) -> Any:
    ftype = type(current)
    if isinstance(current, bool):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"AUTOPACK_{field.upper()}: expected true/false, got {value!r}")
    if isinstance(current, list):
        items = [v.strip() for v in value.split(",") if v.strip()]
        if field in ("allowed_uids", "allowed_gids"):
            try:
                return [int(v) for v in items]
            except ValueError:
                raise ConfigError(f"AUTOPACK_{field.upper()}: expected comma-separated integers") from None
        return items
    if isinstance(current, dict):
        raise ConfigError(f"AUTOPACK_{field.upper()}: set this one in the config file")
    if field == "socket_mode":
        return int(value, 8)
    if isinstance(current, int):
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"AUTOPACK_{field.upper()}: expected an integer, got {value!r}") from None
    if isinstance(current, float) or field in ("retention_days",):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"AUTOPACK_{field.upper()}: expected a number, got {value!r}") from None
    del ftype
    return value


def load_settings(
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build settings from file, then ``AUTOPACK_*`` env, then ``overrides`` (flags).

    Raises :class:`ConfigError` naming the offending key.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    if config_file:
        try:
            data = tomllib.loads(Path(config_file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
        if "socket_mode" in data and isinstance(data["socket_mode"], str):
            data["socket_mode"] = int(data["socket_mode"], 8)
    unknown = set(data) - set(Settings.__struct_fields__)
    if unknown:
        raise ConfigError(f"unknown setting(s) in {config_file}: {', '.join(sorted(unknown))}")
    defaults = Settings()
    for field in Settings.__struct_fields__:
        key = f"AUTOPACK_{field.upper()}"
        if key in env:
            data[field] = _coerce_env(field, env[key], getattr(defaults, field))
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    try:
        settings = msgspec.convert(data, Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid setting: {exc}") from None
    if settings.drift_policy not in ("revert", "fail"):
        raise ConfigError("drift_policy must be 'revert' or 'fail'")
    if settings.max_concurrent_runs < 1:
        raise ConfigError("max_concurrent_runs must be >= 1")
    if settings.store_synchronous not in ("normal", "full"):
        raise ConfigError("store_synchronous must be 'normal' or 'full'")
    if settings.worktree_pool_size < 0 or settings.worktree_pool_budget_mb < 0:
        raise ConfigError("worktree_pool_size and worktree_pool_budget_mb must be >= 0")
    if not 0.0 <= settings.ab_fraction <= 1.0:
        raise ConfigError("ab_fraction must be within [0, 1]")
    if settings.dashboard_auth not in ("auto", "token"):
        raise ConfigError("dashboard_auth must be 'auto' or 'token'")
    for key in ("max_frame_bytes", "max_connections", "max_buffered_bytes", "run_crash_limit"):
        if getattr(settings, key) < 1:
            raise ConfigError(f"{key} must be >= 1")
    for key in ("frame_timeout_s", "idle_timeout_s"):
        value = getattr(settings, key)
        if not 0 < value < 10**9:  # also refuses NaN
            raise ConfigError(f"{key} must be a positive number of seconds")
    if not 0 <= settings.restart_limit <= 1_000_000:
        raise ConfigError("restart_limit must be within 0 – 1000000 (crashes of one child "
                          f"allowed within restart_window_s), got {settings.restart_limit}")
    if not 0.001 <= settings.restart_window_s <= 86_400:  # also refuses NaN
        raise ConfigError("restart_window_s must be within 0.001 – 86400 seconds, got "
                          f"{settings.restart_window_s}")
    if settings.log_format not in ("text", "json"):
        raise ConfigError("log_format must be 'text' or 'json'")
    for model, values in settings.prices.items():
        if len(values) != 4 or any(v < 0 for v in values):
            raise ConfigError(f"prices.{model}: expected [input, output, cache_write, cache_read] "
                              "in USD per million tokens, all >= 0")
    for name in ("daily_usd_budget", "daily_token_budget"):
        value = getattr(settings, name)
        if value is not None and value <= 0:
            raise ConfigError(f"{name} must be > 0 (leave it unset for no daily limit)")
    if settings.builder_context_editing not in ("ours", "api", "off"):
        raise ConfigError("builder_context_editing must be 'ours', 'api' or 'off'")
    if settings.builder_retry_model_on not in ("precise", "named"):
        raise ConfigError("builder_retry_model_on must be 'precise' or 'named'")
    if settings.min_output_tokens < 1:
        raise ConfigError("min_output_tokens must be >= 1")
    if settings.sandbox not in ("auto", "bwrap", "off"):
        raise ConfigError(f"sandbox must be 'auto', 'bwrap' or 'off', got {settings.sandbox!r}")
    if settings.sandbox_network not in ("none", "install", "all"):
        raise ConfigError("sandbox_network must be 'none', 'install' or 'all', got "
                          f"{settings.sandbox_network!r}")
    return settings

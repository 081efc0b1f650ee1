"""What the daemon says about itself: ``health`` (socket, ``/readyz``) and ``/metrics``.

Each part keeps its own counters (``statistics()``); this module only combines
them. A part that crashed recently, or whose last request failed, is
*degraded* with its restart count and last error, never "ok".
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
from autopack.actors._llm import LLM
from autopack.actors._memory import MemoryActor
from autopack.actors._sandbox import Sandbox
from autopack.actors._scheduler import Scheduler
from autopack.protocol import Health

from ._config import LiveSettings
from ._control import ControlServer
from ._health import Fallback, HealthServer, json_body
from ._records import Records
from ._store import Store
from ._supervisor import Supervisor, supervised_children

MEMORY_REQUESTS = frozenset({"context", "lessons"})


class HealthView:
    """Health and metrics of the daemon's parts. ``control`` and ``sandbox`` are set by
    the daemon once they exist; ``stopping()`` and ``endpoints()`` are read per answer."""

    def __init__(self, *, store: Store, records: Records, supervisor: Supervisor,
                 memory: MemoryActor, llm: LLM, scheduler: Scheduler, live: LiveSettings,
                 version: str, stopping: Callable[[], bool],
                 endpoints: Callable[[], dict[str, str]]) -> None:
        self.store, self.records, self.supervisor = store, records, supervisor
        self.memory, self.llm, self.scheduler, self.live = memory, llm, scheduler, live
        self.version, self.stopping, self.endpoints = version, stopping, endpoints
        self.control: ControlServer | None = None
        self.sandbox: Sandbox | None = None
        self._metrics_cache: Any = None  # _stats.MetricsCache, made on first use

    def http_server(self, listen: str, *,
                    dashboard: Fallback | None = None) -> HealthServer:
        """The HTTP listener on ``listen`` (``host:port``): ``/healthz``, ``/readyz``,
        ``/metrics``; every other path goes to ``dashboard`` (if any)."""
        host, _, port = listen.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"

        async def healthz() -> tuple[int, str, bytes]:
            return json_body(200, {"alive": True, "pid": os.getpid(), "version": self.version,
                                   "sandbox": self.sandbox_mode()})

        async def readyz() -> tuple[int, str, bytes]:
            h = await self.health()
            return json_body(200 if h.ready else 503, msgspec.to_builtins(h))

        async def metrics() -> tuple[int, str, bytes]:
            from ._metrics import METRICS_CONTENT_TYPE

            return 200, METRICS_CONTENT_TYPE, await self.metrics_text()

        return HealthServer(host, int(port or 0), {"/healthz": healthz, "/readyz": readyz,
                                                   "/metrics": metrics}, fallback=dashboard)

    def sandbox_mode(self) -> str:
        """``bwrap``, ``unavailable`` or ``off`` (``""`` before the start-up probe)."""
        return self.sandbox.mode if self.sandbox is not None else ""

    def sandbox_detail(self) -> str:
        return self.sandbox.probe.detail if self.sandbox is not None else ""

    async def health(self, *, counts: dict[str, int] | None = None) -> Health:
        """What each part is doing, as seen: a part that crashed recently, or whose last
        request failed, is degraded (with its restart count and last error), not "ok".
        ``counts``: runs by state already read (``/metrics``), else read from the store."""
        parts: dict[str, str] = {"store": self._store_state()}
        details: dict[str, dict[str, Any]] = {}
        recent = anyio.current_time() - self.live.current.restart_window_s
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
        if counts is None:
            counts = await self.records.counts() if parts["store"] == "ok" else {}
        return Health(alive=True, ready=not required_down and not self.stopping(), parts=parts,
                      degraded=degraded, runs=counts, version=self.version, details=details,
                      children=supervised_children(self.supervisor),
                      sandbox=self.sandbox_mode(), sandbox_detail=self.sandbox_detail(),
                      endpoints=self.endpoints())

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
        # at most one store read per scrape, none while nothing was written since the last
        # one: the database's figures (counts by state, which also give the queue depth and
        # health's counts, and the counters); the live ones are filled in below
        snapshot = await self.store.read_cached(
            "metrics", metrics_snapshot, queue_depth=0, memory_degraded=False,
            actor_restarts={}, control_connections_total=0, control_connections_active=0,
            version=self.version, cache=self._metrics_cache)
        health = await self.health(counts=dict(snapshot.runs_by_state))
        extra: dict[str, Any] = {
            "queue_depth": snapshot.runs_by_state.get("queued", 0),
            "memory_degraded": int(self.extra_health_parts().get("memory") == "degraded"),
            "actor_restarts": self.supervisor.total_restarts(),
            "control_connections_total": ctl.connections_total if ctl else 0,
            "control_connections_active": ctl.connections_active if ctl else 0,
            "part_degraded": {k: int(v == "degraded") for k, v in health.parts.items()},
            "part_down": {k: int(v == "down") for k, v in health.parts.items()},
            "request_errors": dict(self.control.outcomes.errors) if self.control else {},
            "store_write_failures": self.store.write_failures,
            "run_actor_crashes": self.scheduler.statistics().actor_crashes,
            "actor_up": {c.name: int(c.state == "up") for c in self.supervisor.statistics()},
        }
        if ctl is not None:
            extra.update(control_rejected_busy=ctl.rejected_busy,
                         control_timeouts=ctl.timeouts,
                         control_buffered_bytes=ctl.buffered_bytes,
                         control_invalid_requests=ctl.invalid_requests,
                         control_replies_too_large=ctl.replies_too_large)
        return render_metrics(msgspec.structs.replace(snapshot, **extra))

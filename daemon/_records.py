"""Async, domain-level face of the Store that actors are given (they never see SQL).

Every method is one store job, so each state change and its event commit
together; methods that write events wake ``logs -f`` followers. Reads go to the
store's reader connection (``Store.read``) and never wait behind writes.
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any

from autopack.protocol import RunSpec

from . import _queries as q
from ._store import Store


def new_run_id() -> str:
    """Sortable, readable, unique enough: ``20261125-164612-3fa9c1d2``."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)


class Records:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.daemon_pid = os.getpid()
        self.boot_id = _boot_id()

    async def submit(self, spec: RunSpec, repo: str, arm: str) -> str:
        run_id = await self.store.call(q.insert_run, new_run_id, spec, repo, arm, time.time())
        self.store.notify_changed()
        return run_id

    async def run(self, run_id: str) -> dict[str, Any]:
        return await self.store.read(q.get_run, run_id)

    async def list_runs(self, state: str | None = None, limit: int = 100, *,
                        states: list[str] | None = None,
                        before: int | None = None) -> list[dict[str, Any]]:
        """Runs newest first (rows with ``seq`` and ``phases``); see :func:`_queries.list_runs`."""
        return await self.store.read(q.list_runs, state, limit, states=states, before=before)

    async def runs_in(self, *states: str) -> list[str]:
        return await self.store.read(q.run_ids_in_states, list(states))

    async def counts(self) -> dict[str, int]:
        """Runs by state; no store read while nothing was written since the last one."""
        return dict(await self.store.read_cached("counts", q.count_by_state))

    async def set_run_state(self, run_id: str, target: str, reason: str | None = None,
                            **payload: Any) -> str:
        prev = await self.store.call(q.set_run_state, run_id, target, reason, time.time(), payload)
        self.store.notify_changed()
        return prev

    async def set_run_fields(self, run_id: str, **fields: Any) -> None:
        await self.store.call(q.set_run_fields, run_id, **fields)

    async def set_phase_state(self, run_id: str, idx: int, target: str, *,
                              reason: str | None = None, commit: str | None = None,
                              **payload: Any) -> None:
        await self.store.call(q.set_phase_state, run_id, idx, target, time.time(),
                              reason=reason, commit=commit, payload=payload)
        self.store.notify_changed()

    async def begin_attempt(self, run_id: str, idx: int, **payload: Any) -> int:
        n = await self.store.call(q.begin_attempt, run_id, idx, time.time(), payload)
        self.store.notify_changed()
        return n

    async def event(self, run_id: str, phase_id: str | None, attempt: int | None, kind: str,
                    **payload: Any) -> None:
        """Record a progress event. Not waited for: it commits with the writer's next batch
        (with other runs' events, one transaction), in order with this run's other writes
        (a state change awaited after it commits it too). ``logs -f`` wakes after it."""
        self.store.post(q.add_event, run_id, phase_id, attempt, kind, time.time(), payload)

    async def events_after(self, run_id: str, after: int, limit: int = 1000) -> list[dict[str, Any]]:
        return await self.store.read(q.events_after, run_id, after, limit)

    async def add_doctor_call(self, run_id: str, idx: int) -> int:
        n: int = await self.store.call(q.add_doctor_call, run_id, idx, time.time())
        self.store.notify_changed()
        return n

    async def record_llm_call(self, run_id: str, phase_id: str | None, attempt: int | None,
                              role: str, model: str, usage: dict[str, int],
                              cost_pusd: int | None = None) -> dict[str, int]:
        return await self.store.call(q.record_llm_call, run_id, phase_id, attempt, role, model,
                                     usage, time.time(), cost_pusd)

    async def spend(self, run_id: str, phase_id: str) -> dict[str, int]:
        return await self.store.call(q.run_spend, run_id, phase_id)

    async def spend_since(self, since_ts: float) -> tuple[int, int]:
        return await self.store.call(q.spend_since, since_ts)

    async def llm_calls(self, run_id: str) -> list[dict[str, Any]]:
        return await self.store.call(q.run_llm_calls, run_id)

    async def tokens(self, run_id: str | None = None) -> dict[str, int]:
        return await self.store.read(q.run_tokens, run_id)

    async def mean_doctor_tokens(self) -> float | None:
        return await self.store.read(q.mean_doctor_tokens)

    async def add_process(self, pgid: int, run_id: str, command: str) -> None:
        await self.store.call(q.add_process, pgid, run_id, command, time.time(), self.daemon_pid,
                              self.boot_id)

    async def remove_process(self, pgid: int) -> None:
        await self.store.call(q.remove_process, pgid)

    async def take_stale_processes(self) -> list[dict[str, Any]]:
        return await self.store.call(q.take_processes, self.daemon_pid)

    async def all_events(self, run_id: str) -> list[dict[str, Any]]:
        return await self.store.read(q.run_events, run_id)


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return None

"""One SQLite worker: a daemon thread that owns one connection and runs queued jobs on it.

The Store's writer and reader (``daemon._store``) and the memory actor
(``actors._memory``) each own one; this module is the machinery they share.

Theory of operation
-------------------
aiosqlite does not run under trio, and a ``sqlite3`` connection belongs to one
thread, so each connection gets a dedicated daemon thread. A trio task puts a
:class:`Job` on the worker's queue and waits on the job's ``trio.Event``. The
thread takes the first job and every job already waiting (at most
``max_batch``: the Store's group commit), hands the batch to ``run_batch``
(default: each job on its own, its error kept for its caller), then wakes the
batch's callers with one ``run_sync_soon`` per trio run — one hop back per
batch, not per job, and the thread never waits for the event loop (trio's
token, not anyio's blocking ``from_thread``: anyio has no non-blocking form).

:meth:`SqlWorker.post` queues a job nobody waits for: it runs in order with the
others, its error is logged, and ``on_posted`` runs on the trio side once the
batch it landed in is done (the Store wakes ``logs -f`` followers there).

:meth:`SqlWorker.stop` queues the end: the thread finishes the jobs queued
before it, closes its resource and ends; :meth:`SqlWorker.join` waits for that.
A worker whose thread hangs in SQLite is abandoned, never joined (memory's
stuck thread): it is a daemon thread and ends whenever SQLite lets go.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import trio

LOGGER = logging.getLogger(__name__)
C = TypeVar("C")  # what the thread owns: a sqlite3.Connection, or an object holding one
T = TypeVar("T")

__all__ = ["Job", "SqlWorker"]


class Job:
    """One unit of work: ``fn(resource, *args, **kwargs)`` on the worker's thread.

    ``run_batch`` callables set ``result`` or ``error``; the worker sets ``done``."""

    __slots__ = ("args", "done", "error", "fn", "kwargs", "posted", "result", "token")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 token: trio.lowlevel.TrioToken, posted: bool = False) -> None:
        self.fn, self.args, self.kwargs, self.token = fn, args, kwargs, token
        self.posted = posted  # nobody waits: errors are logged, on_posted runs after
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = trio.Event()

    def run(self, resource: Any) -> None:
        """Run the job on ``resource``, keeping its result or its exception."""
        try:
            self.result = self.fn(resource, *self.args, **self.kwargs)
        except Exception as exc:  # the caller gets it; other jobs are unaffected
            self.error = exc


def _run_each(resource: Any, batch: list[Job]) -> None:
    for job in batch:
        job.run(resource)


class SqlWorker(Generic[C]):
    """A thread owning the resource ``connect()`` returns (called on the thread).

    ``run_batch(resource, jobs)`` runs a batch (default: each job on its own);
    ``close(resource)`` ends it when the worker stops; ``on_posted()`` runs on the trio
    side after a batch holding posted jobs was woken. Start with :meth:`start`.
    """

    def __init__(self, name: str, connect: Callable[[], C], *,
                 run_batch: Callable[[C, list[Job]], None] = _run_each,
                 close: Callable[[C], None] | None = None,
                 on_posted: Callable[[], None] | None = None, max_batch: int = 512) -> None:
        self.name = name
        self._connect = connect
        self._run_batch = run_batch
        self._close = close
        self._on_posted = on_posted
        self._max_batch = max_batch
        self._q: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._connected = threading.Event()
        self._failure: BaseException | None = None
        self.alive = False
        self.jobs = 0
        self.batches = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the thread; it connects first. Does not wait (see :meth:`connected`)."""
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    async def connected(self) -> None:
        """Wait until the thread connected; re-raise what ``connect()`` raised."""
        if not self._connected.is_set():
            await trio.to_thread.run_sync(self._connected.wait)
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        """Queue the end: the thread finishes the jobs queued before, closes, ends."""
        self._q.put(None)

    async def join(self) -> None:
        """:meth:`stop`, then wait for the thread to end. Safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self.stop()
        await trio.to_thread.run_sync(thread.join)

    @property
    def queue_depth(self) -> int:
        return self._q.qsize()

    # ------------------------------------------------------------------ trio side
    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(resource, *args, **kwargs)`` on the thread; return its result or
        re-raise its exception. Not cancellable once queued (the job still runs): a
        cancelled caller only stops waiting."""
        job = Job(fn, args, kwargs, trio.lowlevel.current_trio_token())
        self._q.put(job)
        await job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[no-any-return]

    def post(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue ``fn(resource, *args, **kwargs)`` without waiting (call on the trio side)."""
        self._q.put(Job(fn, args, kwargs, trio.lowlevel.current_trio_token(), posted=True))

    # ------------------------------------------------------------------ thread side
    def _main(self) -> None:
        try:
            resource = self._connect()
        except BaseException as exc:  # handed to connected()'s caller
            self._failure = exc
            self._connected.set()
            return
        self.alive = True
        self._connected.set()
        try:
            self._loop(resource)
        finally:
            self.alive = False
            if self._close is not None:
                try:
                    self._close(resource)
                except Exception:
                    LOGGER.debug("%s: closing failed", self.name, exc_info=True)

    def _loop(self, resource: C) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch, stop = self._take_batch(first)
            self._run_batch(resource, batch)
            self.jobs += len(batch)
            self.batches += 1
            self._wake(batch)
            if stop:
                return

    def _take_batch(self, first: Job) -> tuple[list[Job], bool]:
        """``first`` and every job already waiting (at most ``max_batch``); ``True`` = stop."""
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                nxt = self._q.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                return batch, True
            batch.append(nxt)
        return batch, False

    def _wake(self, batch: list[Job]) -> None:
        # one hop back per trio run (normally one), not one per job
        by_token: dict[trio.lowlevel.TrioToken, list[Job]] = {}
        for job in batch:
            if job.posted and job.error is not None:
                LOGGER.error("%s: a posted write failed: %s", self.name, job.error)
            by_token.setdefault(job.token, []).append(job)
        for token, jobs in by_token.items():
            notify = self._on_posted if any(j.posted for j in jobs) else None
            try:
                token.run_sync_soon(_set_all, jobs, notify)
            except trio.RunFinishedError:
                pass  # the event loop is gone: nobody is waiting any more


def _set_all(jobs: list[Job], notify: Callable[[], None] | None) -> None:
    for job in jobs:
        job.done.set()
    if notify is not None:
        notify()

"""The Store: sole owner of the run database.

Theory of operation
-------------------
Two dedicated threads, each owning one ``sqlite3`` connection (aiosqlite does
not run under trio), each a :class:`~autopack.actors._sqlworker.SqlWorker` (the
machinery shared with the memory actor; this module supplies how a batch runs):

* the **writer**: callers on the trio side ``await store.call(fn, *args)``; the
  job goes on a queue, the thread takes *every* job waiting (group commit), runs
  each inside its own SAVEPOINT of one ``BEGIN IMMEDIATE`` transaction, commits
  once, and only then wakes the callers. So a ``submit`` is acknowledged only
  after its run is committed, and 100 concurrent submits cost one commit (one
  WAL append, one fsync when ``synchronous=FULL``), not 100.
* the **reader**: ``await store.read(fn, *args)`` runs ``fn`` on a second,
  read-only connection (``query_only``) inside one read transaction (a WAL
  snapshot) per batch of waiting reads. In WAL mode a reader never waits for the
  writer, so ``status``, ``list``, ``health`` and ``/metrics`` never queue behind
  a batch of writes. A read queued after a write was acknowledged sees it (its
  snapshot starts after it is dequeued).

A job that raises rolls back its own savepoint only; its caller gets the
exception. A transaction that fails as a whole (disk full, I/O error: SQLite may
roll it back by itself) fails every job of the batch with :class:`StorageError`,
nothing of it committed; ``write_error`` holds the reason until a write succeeds
again (``probe_write`` tries one), which is what ``/readyz`` reports. If the
writer thread itself dies, every later call raises
:class:`StoreUnavailable` and the supervisor stops the daemon (the store is a
required actor).

The SQL lives in ``_queries.py``; this module is the machinery.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
import trio
from autopack.actors._sqlworker import Job, SqlWorker
from autopack.protocol import StorageError

from ._errors import StoreUnavailable as StoreUnavailable
from ._schema import migrate

LOGGER = logging.getLogger(__name__)
T = TypeVar("T")


class StoreStats(msgspec.Struct, frozen=True, kw_only=True):
    state: str
    jobs: int
    batches: int
    queue_depth: int
    last_error: str | None
    reads: int = 0
    read_batches: int = 0
    read_queue_depth: int = 0
    write_error: str | None = None  # set while writes fail (disk full); cleared by a success
    write_failures: int = 0


class Store:
    """Owner of ``path``. Start with ``await store.open()``, stop with ``close()``."""

    def __init__(self, path: str, *, synchronous: str = "NORMAL") -> None:
        self.path = path
        self.synchronous = synchronous
        self._writer: SqlWorker[sqlite3.Connection] | None = None
        self._reader: SqlWorker[sqlite3.Connection] | None = None
        self._jobs = self._batches = self._reads = self._read_batches = 0  # of stopped workers
        self._cached: dict[str, tuple[int, Any]] = {}  # read_cached: key -> (batches, result)
        self._last_error: str | None = None
        self.write_error: str | None = None
        self.write_failures = 0
        self._changed = trio.Event()  # set (and replaced) whenever events were committed
        self._ckpt: threading.Thread | None = None
        self._ckpt_stop = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        """Open the database, run migrations, start the writer, reader and checkpoint threads."""
        writer = SqlWorker("autopack-store", self._connect, run_batch=self._run_batch,
                           close=sqlite3.Connection.close, on_posted=self.notify_changed)
        writer.start()
        await writer.connected()  # re-raises what opening (or migrating) raised
        self._writer = writer
        await self._start_reader()
        self._ckpt_stop = threading.Event()
        self._ckpt = threading.Thread(target=self._checkpointer, args=(self._ckpt_stop,),
                                      name="autopack-checkpoint", daemon=True)
        self._ckpt.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        # checkpoints run on their own connection and thread (see _checkpointer), so a
        # commit never waits for a checkpoint's fsync
        conn.execute("PRAGMA wal_autocheckpoint=0")
        migrate(conn)
        return conn

    async def _start_reader(self) -> None:
        """The read-only connection and its thread. Without it (it could not open), reads
        go through the writer: slower under load, still correct."""
        reader = SqlWorker("autopack-store-reader", self._connect_reader,
                           run_batch=self._run_reads, close=sqlite3.Connection.close)
        reader.start()
        try:
            await reader.connected()
        except sqlite3.Error as exc:
            LOGGER.warning("reader connection unavailable (%s); reads go through the writer", exc)
            return
        self._reader = reader

    def _connect_reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA query_only=ON")
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def _checkpointer(self, stop: threading.Event) -> None:
        """Copy the WAL back into the database once a second, without blocking writers
        (PASSIVE). Keeps submit latency free of checkpoint stalls."""
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=1000")
        except sqlite3.Error as exc:
            LOGGER.warning("checkpointer cannot open the database: %s", exc)
            return
        try:
            while not stop.wait(1.0):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    LOGGER.debug("checkpoint skipped: %s", exc)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        finally:
            conn.close()

    async def close(self) -> None:
        """Stop the threads after the jobs already queued. Safe to call twice."""
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await reader.join()
            self._reads += reader.jobs
            self._read_batches += reader.batches
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        await writer.join()
        self._jobs += writer.jobs
        self._batches += writer.batches
        if self._ckpt is not None:
            self._ckpt_stop.set()
            await trio.to_thread.run_sync(self._ckpt.join)
            self._ckpt = None

    @property
    def alive(self) -> bool:
        return self._writer is not None and self._writer.alive

    def statistics(self) -> StoreStats:
        w, r = self._writer, self._reader
        return StoreStats(
            state="ok" if self.alive else "down",
            jobs=self._jobs + (w.jobs if w else 0),
            batches=self._batches + (w.batches if w else 0),
            queue_depth=w.queue_depth if w else 0,
            last_error=self._last_error,
            reads=self._reads + (r.jobs if r else 0),
            read_batches=self._read_batches + (r.batches if r else 0),
            read_queue_depth=r.queue_depth if r else 0,
            write_error=self.write_error,
            write_failures=self.write_failures,
        )

    # ------------------------------------------------------------------ calls
    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, *args)`` on the writer thread inside a committed transaction.

        Returns its result after the commit; re-raises what ``fn`` raised. Not
        cancellable once queued (the job may still commit): callers that are
        cancelled simply stop waiting.
        """
        writer = self._writer
        if writer is None or not writer.alive:
            raise StoreUnavailable("the store is not running")
        return await writer.call(fn, *args, **kwargs)

    def post(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue ``fn(conn, *args)`` on the writer without waiting for it (call on the trio side).

        For records nobody is told about (a run's progress events): it commits with the
        batch it lands in, after every job queued before it and before every job queued
        after it, so a later :meth:`call` returning means it is committed too. An error
        is logged, not raised. :meth:`changed_event` fires once the batch committed.
        """
        writer = self._writer
        if writer is None or not writer.alive:
            raise StoreUnavailable("the store is not running")
        writer.post(fn, *args, **kwargs)

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, *args)`` on the read-only connection; returns its result.

        ``fn`` must not write (the connection is ``query_only``). It sees every write
        acknowledged before this call, and one consistent snapshot throughout.
        """
        writer, reader = self._writer, self._reader
        if writer is None or not writer.alive:
            raise StoreUnavailable("the store is not running")
        if reader is None or not reader.alive:
            return await writer.call(fn, *args, **kwargs)
        return await reader.call(fn, *args, **kwargs)

    async def read_cached(self, key: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """:meth:`read`, answered from the previous result under ``key`` when no write batch
        has committed since that read was asked (no thread hop: what ``health`` and
        ``/metrics`` ask at every probe while nothing changes). Exact, not a time-based
        cache: every write acknowledged before this call is seen. The result is shared
        between callers: do not mutate it."""
        generation = self._write_batches()  # before the read: a later commit invalidates
        hit = self._cached.get(key)
        if hit is not None and hit[0] == generation:
            return hit[1]  # type: ignore[no-any-return]
        result = await self.read(fn, *args, **kwargs)
        self._cached[key] = (generation, result)
        return result

    def _write_batches(self) -> int:
        """Write batches committed so far (the worker counts one before its callers wake)."""
        writer = self._writer
        return self._batches + (writer.batches if writer else 0)

    def notify_changed(self) -> None:
        """Wake everyone holding :meth:`changed_event` (call on the trio side)."""
        self._changed.set()
        self._changed = trio.Event()

    def changed_event(self) -> trio.Event:
        """The event that the next commit of events will set (take it *before* reading)."""
        return self._changed

    # ------------------------------------------------------------------ thread side
    def _run_reads(self, conn: sqlite3.Connection, batch: list[Job]) -> None:
        # one read transaction: one snapshot for the batch, taken after every job in it
        # was queued (so each sees the writes acknowledged before it was asked)
        try:
            conn.execute("BEGIN")
        except sqlite3.Error as exc:
            for job in batch:
                job.error = exc
            return
        for job in batch:
            job.run(conn)  # an error stays its caller's; others in the batch are unaffected
        try:
            conn.execute("COMMIT")
        except sqlite3.Error:
            pass  # a failed statement may already have ended it

    def _run_batch(self, conn: sqlite3.Connection, batch: list[Job]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                self._run_job(conn, job)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:  # the transaction as a whole: disk full, I/O error
            failure = StorageError(f"the database cannot be written: {exc}")
            LOGGER.error("store write failed: %s", exc)
            self._last_error = self.write_error = str(exc)
            self.write_failures += 1
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            for job in batch:
                if job.error is None or isinstance(job.error, sqlite3.Error):
                    job.error = failure
                    job.result = None
        else:
            if self.write_error is not None:
                LOGGER.info("store writes succeed again")
            self.write_error = None

    @staticmethod
    def _run_job(conn: sqlite3.Connection, job: Job) -> None:
        """One job in its savepoint; its own error stays its own, unless the transaction
        itself is gone or the disk failed (then the whole batch fails: re-raised)."""
        conn.execute("SAVEPOINT job")
        try:
            job.result = job.fn(conn, *job.args, **job.kwargs)
        except Exception as exc:  # the caller gets it; others in the batch are unaffected
            job.error = exc
            if _is_storage_failure(exc) or not conn.in_transaction:
                raise
            conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")

    async def probe_write(self) -> bool:
        """Try one tiny write (clears ``write_error`` when it succeeds); True if it did."""
        try:
            await self.call(_probe)
        except (StorageError, StoreUnavailable):
            return False
        return True


# SQLite primary result codes that mean "the storage failed", not "this job is wrong"
_STORAGE_CODES = {10, 13, 14}  # SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN


def _is_storage_failure(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in _STORAGE_CODES


def _probe(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS store_probe (id INTEGER PRIMARY KEY, ts REAL)")
    conn.execute("INSERT OR REPLACE INTO store_probe (id, ts) VALUES (1, julianday('now'))")

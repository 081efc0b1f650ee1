"""The context-memory actor: a run's intention and what was learned, never in the way.

Theory of operation
-------------------
Memory keeps its own tables (prefixed ``mem_``) in the daemon's SQLite file,
through *its own* connection owned by *its own* daemon thread, so a locked or
broken memory table degrades memory only and never blocks the Store. The
schema version lives in ``mem_meta`` (the Store owns ``PRAGMA user_version``).

Callers hold a :class:`MemoryClient`. Each call puts a request on the actor's
memory channel and waits for the answer under ``move_on_after(deadline_s)``.
The actor task (:meth:`MemoryActor.serve`) takes requests one at a time and
hops to its thread for the SQL (and the pure context budgeting of
:mod:`._context`). Whatever goes wrong — actor not running, crashed, slow,
thread stuck, SQL error, tables dropped — the caller gets an empty
:class:`ContextResult` with ``degraded=True`` (or ``False`` / ``None`` from the
other calls) at the latest at its deadline. Nothing here raises to a caller
for a memory problem; only cancellation of the caller's own scope propagates.

``serve`` is restartable: each run opens a fresh channel and a fresh thread.
If the thread does not answer within ``stuck_after_s`` it is abandoned (it is a
daemon thread; it exits whenever SQLite lets go) and ``serve`` raises
:class:`MemoryStuck`, so the supervisor restarts it with backoff. When
``serve`` ends for any reason, requests queued or in flight are failed at
once, so callers do not even wait for their deadline.

Lessons: when an attempt that worked is recorded after failed attempts of the
same phase, each distinct failure (pattern + evidence) becomes a lesson
``(repo, signature, fix)``. Lessons are indexed with FTS5 and ranked with
BM25; a new failure's pattern and evidence tokens find the closest ones.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectSendStream
from autopack.protocol import (
    Classification,
    ContextReply,
    Error,
    ErrorCode,
    GetContext,
    GetLessons,
    Lessons,
    RunSpec,
)

from ._context import FailedApproach, Intention, Lesson, build_context, utf8_len
from ._failpoints import FailpointPanic, hit_async
from ._sqlworker import Job, SqlWorker

LOGGER = logging.getLogger(__name__)

SCHEMA_VERSION = 1
T = TypeVar("T")

_TOKEN_RE = re.compile(r"[^\W_]+")
_MAX_QUERY_TOKENS = 16
_MAX_SCORING_EXTRA = 4
_STOPWORDS = frozenset(
    "a an and are as at be by for from has in is it no not of on or the to was with".split()
)


# ---------------------------------------------------------------------- public records
@dataclass(frozen=True, slots=True)
class ContextResult:
    """What :meth:`MemoryClient.context_for` returns.

    ``bytes`` is the UTF-8 size of ``text``; ``degraded`` is True when memory
    could not answer (then ``text`` is empty).
    """

    text: str
    bytes: int
    degraded: bool = False


@dataclass(frozen=True, slots=True)
class MemoryStats:
    """A snapshot for health and metrics.

    ``state``: ``"ok"``, ``"degraded"`` (serving, but the last request failed or
    timed out), ``"down"`` (not serving: not started, crashed, not yet
    restarted) or ``"disabled"`` (feature flag off).
    """

    state: str
    requests: int
    timeouts: int
    errors: int
    restarts: int
    last_error: str | None
    queue_depth: int = 0


class MemoryStuck(Exception):
    """Raised by :meth:`MemoryActor.serve` when its SQL thread did not answer in time.

    The supervisor restarts ``serve``; the stuck thread is abandoned.
    """


class _Unavailable(Exception):
    """Set on a request that the actor could not serve (stopped, crashed, expired)."""


# ---------------------------------------------------------------------- SQL
_DDL_V1 = (
    """CREATE TABLE IF NOT EXISTS mem_intentions (
        run_id TEXT PRIMARY KEY,
        repo TEXT NOT NULL,
        goal TEXT NOT NULL,
        constraints TEXT NOT NULL DEFAULT '[]',
        non_goals TEXT NOT NULL DEFAULT '[]',
        acceptance TEXT NOT NULL DEFAULT '[]',
        phases TEXT NOT NULL DEFAULT '[]',
        created_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS mem_outcomes (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        phase_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        tried TEXT NOT NULL,
        pattern TEXT,
        evidence TEXT NOT NULL,
        worked INTEGER NOT NULL,
        fix TEXT,
        created_at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS mem_outcomes_phase ON mem_outcomes (run_id, phase_id, attempt)",
    """CREATE TABLE IF NOT EXISTS mem_lessons (
        id INTEGER PRIMARY KEY,
        repo TEXT NOT NULL,
        signature TEXT NOT NULL,
        fix TEXT NOT NULL,
        pattern TEXT NOT NULL DEFAULT '',
        seen INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (repo, signature, fix))""",
    """CREATE VIRTUAL TABLE IF NOT EXISTS mem_lessons_fts USING fts5(
        signature, fix, pattern, content='mem_lessons', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2')""",
    "CREATE VIRTUAL TABLE IF NOT EXISTS mem_lessons_vocab USING fts5vocab(mem_lessons_fts, 'row')",
    """CREATE TRIGGER IF NOT EXISTS mem_lessons_ai AFTER INSERT ON mem_lessons BEGIN
        INSERT INTO mem_lessons_fts (rowid, signature, fix, pattern)
        VALUES (new.id, new.signature, new.fix, new.pattern);
    END""",
    """CREATE TRIGGER IF NOT EXISTS mem_lessons_ad AFTER DELETE ON mem_lessons BEGIN
        INSERT INTO mem_lessons_fts (mem_lessons_fts, rowid, signature, fix, pattern)
        VALUES ('delete', old.id, old.signature, old.fix, old.pattern);
    END""",
    """CREATE TRIGGER IF NOT EXISTS mem_lessons_au AFTER UPDATE OF signature, fix, pattern
    ON mem_lessons BEGIN
        INSERT INTO mem_lessons_fts (mem_lessons_fts, rowid, signature, fix, pattern)
        VALUES ('delete', old.id, old.signature, old.fix, old.pattern);
        INSERT INTO mem_lessons_fts (rowid, signature, fix, pattern)
        VALUES (new.id, new.signature, new.fix, new.pattern);
    END""",
)
_MEM_TABLES = ("mem_intentions", "mem_outcomes", "mem_lessons", "mem_lessons_fts",
               "mem_lessons_vocab")


def query_tokens(texts: Sequence[str]) -> list[str]:
    """Search tokens of ``texts``: lower case, split like FTS5's unicode61 tokenizer
    (letters and digits; ``_`` and punctuation separate), no stop words, no bare
    numbers, first occurrence order, at most 16."""
    tokens: list[str] = []
    for text in texts:
        for tok in _TOKEN_RE.findall(text.lower()):
            if tok in _STOPWORDS or tok in tokens or not any(c.isalpha() for c in tok):
                continue
            tokens.append(tok)
            if len(tokens) == _MAX_QUERY_TOKENS:
                return tokens
    return tokens


def _any_of(tokens: Sequence[str]) -> str:
    # Tokens hold only letters and digits, so quoting makes any text a valid phrase.
    return "(" + " OR ".join(f'"{tok}"' for tok in tokens) + ")"


def fts_query(texts: Sequence[str]) -> str | None:
    """An FTS5 query matching any token of ``texts``; ``None`` when there is none.

    Every token is quoted, so arbitrary text (quotes, ``*``, ``NEAR``, ``-``,
    parentheses) can never be a syntax error.
    """
    tokens = query_tokens(texts)
    return _any_of(tokens) if tokens else None


def ranked_query(tokens_df: Sequence[tuple[str, int]], *, budget: int = 300) -> str | None:
    """The FTS5 query for a lesson search, given each token's document frequency.

    BM25 costs time per *matching row*, so matching every row that shares a
    common word ("module", "error") is slow with many lessons and adds little.
    The rarest tokens (together matching at most about ``budget`` rows, at
    least one token) are *anchors* that a row must match; all tokens still
    score, so common words order the candidates. Tokens no lesson has are
    dropped; ``None`` when no token is left.
    """
    present = [(tok, df) for tok, df in tokens_df if df > 0]
    if not present:
        return None
    anchors: list[str] = []
    total = 0
    for tok, df in sorted(present, key=lambda item: item[1]):  # stable: ties keep text order
        if anchors and total + df > budget:
            break
        anchors.append(tok)
        total += df
    if len(anchors) == len(present):
        return _any_of(anchors)
    # Scoring-only tokens cost a read of their (long) row lists each: the rarest few suffice.
    extra = sorted((item for item in present if item[0] not in anchors), key=lambda item: item[1])
    scoring = set(anchors) | {tok for tok, _ in extra[:_MAX_SCORING_EXTRA]}
    return f"{_any_of(anchors)} AND {_any_of([tok for tok, _ in present if tok in scoring])}"


def _failure_texts(failure: Classification) -> list[str]:
    return [failure.pattern or "", *failure.evidence]


class _MemoryDB:
    """The memory tables, used only from the memory thread."""

    def __init__(self, path: str, busy_timeout_s: float) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._conn: sqlite3.Connection | None = None
        self._schema_ok = False
        # Document frequencies of search tokens. Only this connection writes lessons, and
        # it clears the cache when it does; a stale count only shifts the anchor choice.
        self._df: dict[str, int] = {}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def conn(self) -> sqlite3.Connection:
        """The connection, opened and migrated (or repaired) when needed."""
        if self._conn is None:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError:  # locked by someone else: the Store sets it anyway
                pass
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        if not self._schema_ok:
            self._migrate(self._conn)
            self._schema_ok = True
        return self._conn

    def failed(self, exc: BaseException) -> None:
        """After an SQL error: re-check the schema next time (dropped tables are recreated)."""
        if not (isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)):
            self._schema_ok = False

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS mem_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = conn.execute("SELECT value FROM mem_meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"memory schema version {version} is newer than this daemon's {SCHEMA_VERSION}")
        present = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE name LIKE 'mem\\_%' ESCAPE '\\'")}
        if version == SCHEMA_VERSION and present.issuperset(_MEM_TABLES):
            return
        with _transaction(conn):
            for stmt in _DDL_V1:
                conn.execute(stmt)
            if "mem_lessons_fts" not in present or "mem_lessons" not in present:
                # One of the two was (re)created: rebuild the index from the lessons.
                conn.execute("INSERT INTO mem_lessons_fts (mem_lessons_fts) VALUES ('rebuild')")
            conn.execute("INSERT OR REPLACE INTO mem_meta (key, value) VALUES ('schema_version', ?)",
                         (str(SCHEMA_VERSION),))
        LOGGER.info("memory schema at version %d in %s", SCHEMA_VERSION, self.path)

    # ------------------------------------------------------------------ writes
    def record_intention(self, run_id: str, repo: str, intention: Intention) -> bool:
        conn = self.conn()
        conn.execute(
            "INSERT INTO mem_intentions (run_id, repo, goal, constraints, non_goals, acceptance,"
            " phases, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (run_id) DO UPDATE SET repo = excluded.repo, goal = excluded.goal,"
            " constraints = excluded.constraints, non_goals = excluded.non_goals,"
            " acceptance = excluded.acceptance, phases = excluded.phases",
            (run_id, os.path.normpath(repo), intention.goal, json.dumps(intention.constraints),
             json.dumps(intention.non_goals), json.dumps(intention.acceptance),
             json.dumps(intention.phases), time.time()))
        return True

    def record_outcome(self, run_id: str, phase_id: str, attempt: int, tried: str,
                       pattern: str | None, evidence: str, worked: bool, fix: str | None) -> bool:
        conn = self.conn()
        now = time.time()
        with _transaction(conn):
            conn.execute(
                "INSERT INTO mem_outcomes (run_id, phase_id, attempt, tried, pattern, evidence,"
                " worked, fix, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, phase_id, attempt, tried, pattern, evidence, int(worked), fix, now))
            if worked:
                self._learn(conn, run_id, phase_id, fix or tried, now)
        return True

    def _learn(self, conn: sqlite3.Connection, run_id: str, phase_id: str, fix: str,
               now: float) -> None:
        row = conn.execute("SELECT repo FROM mem_intentions WHERE run_id = ?", (run_id,)).fetchone()
        if row is None or not fix.strip():
            return
        failures = conn.execute(
            "SELECT DISTINCT coalesce(pattern, ''), evidence FROM mem_outcomes"
            " WHERE run_id = ? AND phase_id = ? AND worked = 0 ORDER BY attempt, id",
            (run_id, phase_id)).fetchall()
        for pattern, evidence in failures:
            if evidence.strip() or pattern:
                self._upsert_lesson(conn, row[0], evidence, fix, pattern, now)

    def record_lesson(self, repo: str, signature: str, fix: str, pattern: str | None) -> bool:
        conn = self.conn()
        with _transaction(conn):
            self._upsert_lesson(conn, os.path.normpath(repo), signature, fix, pattern or "",
                                time.time())
        return True

    def _upsert_lesson(self, conn: sqlite3.Connection, repo: str, signature: str, fix: str,
                       pattern: str, now: float) -> None:
        self._df.clear()
        conn.execute(
            "INSERT INTO mem_lessons (repo, signature, fix, pattern, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (repo, signature, fix)"
            " DO UPDATE SET seen = seen + 1, updated_at = excluded.updated_at",
            (repo, signature, fix, pattern, now, now))

    # ------------------------------------------------------------------ reads
    def intention(self, run_id: str) -> tuple[str, Intention] | None:
        row = self.conn().execute(
            "SELECT repo, goal, constraints, non_goals, acceptance, phases FROM mem_intentions"
            " WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        repo, goal, constraints, non_goals, acceptance, phases = row
        return repo, Intention(
            goal=goal, constraints=tuple(json.loads(constraints)),
            non_goals=tuple(json.loads(non_goals)), acceptance=tuple(json.loads(acceptance)),
            phases=tuple((str(p), str(g)) for p, g in json.loads(phases)))

    def failed_approaches(self, run_id: str, phase_id: str) -> list[FailedApproach]:
        rows = self.conn().execute(
            "SELECT attempt, tried, pattern, evidence FROM mem_outcomes"
            " WHERE run_id = ? AND phase_id = ? AND worked = 0 ORDER BY attempt, id",
            (run_id, phase_id)).fetchall()
        return [FailedApproach(attempt=a, tried=t, pattern=p, evidence=e) for a, t, p, e in rows]

    def lesson_query(self, texts: Sequence[str]) -> str | None:
        """The FTS5 query for ``texts`` (see :func:`ranked_query`); ``None``: nothing can match."""
        tokens = query_tokens(texts)
        if not tokens:
            return None
        conn = self.conn()
        dfs = []
        for tok in tokens:
            df = self._df.get(tok)
            if df is None:
                row = conn.execute("SELECT doc FROM mem_lessons_vocab WHERE term = ?",
                                   (tok,)).fetchone()
                df = int(row[0]) if row else 0
                if len(self._df) >= 4096:
                    self._df.clear()
                self._df[tok] = df
            dfs.append((tok, df))
        return ranked_query(dfs)

    def search_lessons(self, repo: str | None, texts: Sequence[str],
                       limit: int) -> list[dict[str, Any]]:
        """Lessons (of ``repo``, or all) best matching ``texts``, best first (BM25)."""
        query = self.lesson_query(texts)
        if query is None:
            return []
        # The anchors bound the matching rows (over all repositories), so filtering the
        # repository after ranking stays cheap. Weights: signature, fix, pattern.
        rows = self.conn().execute(
            "SELECT l.id, l.repo, l.signature, l.fix, l.pattern, l.seen, l.created_at,"
            " l.updated_at FROM mem_lessons_fts JOIN mem_lessons l ON l.id = mem_lessons_fts.rowid"
            " WHERE mem_lessons_fts MATCH ?1 AND (?2 IS NULL OR l.repo = ?2)"
            " ORDER BY bm25(mem_lessons_fts, 4.0, 1.0, 2.0), l.id LIMIT ?3",
            (query, None if repo is None else os.path.normpath(repo), limit)).fetchall()
        return [_lesson_dict(r) for r in rows]

    def recent_lessons(self, repo: str | None, limit: int) -> list[dict[str, Any]]:
        if repo is None:
            rows = self.conn().execute(
                "SELECT id, repo, signature, fix, pattern, seen, created_at, updated_at"
                " FROM mem_lessons ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        else:
            rows = self.conn().execute(
                "SELECT id, repo, signature, fix, pattern, seen, created_at, updated_at"
                " FROM mem_lessons WHERE repo = ? ORDER BY id DESC LIMIT ?",
                (os.path.normpath(repo), limit)).fetchall()
        return [_lesson_dict(r) for r in rows]

    def context(self, run_id: str, phase_id: str | None, role: str,
                failure: Classification | None, limit_bytes: int, lessons_limit: int) -> str:
        """The bounded context text (empty for a run memory does not know)."""
        known = self.intention(run_id)
        if known is None:
            return ""
        repo, intention = known
        failed = self.failed_approaches(run_id, phase_id) if phase_id else []
        texts: list[str] = []
        if failure is not None:
            texts = _failure_texts(failure)
        elif failed:
            # No failure given: look for lessons about the latest failure of this phase.
            texts = [failed[-1].pattern or "", failed[-1].evidence]
        found = self.search_lessons(repo, texts, lessons_limit) if texts else []
        lessons = [Lesson(signature=d["signature"], fix=d["fix"], pattern=d["pattern"] or None)
                   for d in found]
        return build_context(intention, intention.phase_goal(phase_id), failed, lessons,
                             role=role, limit_bytes=limit_bytes, phase_id=phase_id)


def _lesson_dict(row: Sequence[Any]) -> dict[str, Any]:
    keys = ("id", "repo", "signature", "fix", "pattern", "seen", "created_at", "updated_at")
    return dict(zip(keys, row, strict=True))


class _transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


# ---------------------------------------------------------------------- the thread
class _Worker(SqlWorker["_MemoryDB"]):
    """The memory thread: a :class:`SqlWorker` owning one :class:`_MemoryDB`, one job at a
    time. Started at once; abandoned, never joined, when stuck."""

    def __init__(self, path: str, busy_timeout_s: float, generation: int) -> None:
        super().__init__(f"autopack-memory-{generation}", lambda: _MemoryDB(path, busy_timeout_s),
                         run_batch=_run_jobs, close=_MemoryDB.close, max_batch=1)
        self.start()


def _run_jobs(db: _MemoryDB, batch: list[Job]) -> None:
    for job in batch:
        job.run(db)
        if job.error is not None:  # handed to the actor, which degrades
            db.failed(job.error)


# ---------------------------------------------------------------------- the actor
@dataclass(eq=False)
class _Request:
    fn: Callable[[_MemoryDB], Any]
    expires: float
    failpoint: str = "memory.serve"  # memory.<call>: where a fault can be injected
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Any = None
    error: Exception | None = None
    abandoned: bool = False

    def fail(self, exc: Exception) -> None:
        if not self.done.is_set():
            self.error = exc
            self.done.set()


class MemoryActor:
    """Owner of the memory tables. Run :meth:`serve` under a supervisor; hand out :meth:`client`.

    ``db_path`` is the daemon's SQLite file. ``enabled=False`` (the
    ``enable_intention_context`` flag) makes ``context_for`` answer empty text,
    not degraded. ``busy_timeout_s`` (default: ``deadline_s``) bounds how long
    one SQL statement waits for a lock; ``stuck_after_s`` is when a thread that
    has not answered is declared stuck (``serve`` raises :class:`MemoryStuck`).
    """

    def __init__(self, db_path: str, *, enabled: bool = True, deadline_s: float = 0.25,
                 builder_bytes: int = 2048, doctor_bytes: int = 512,
                 busy_timeout_s: float | None = None, stuck_after_s: float = 10.0,
                 queue_size: int = 64) -> None:
        self.db_path = db_path
        self.enabled = enabled
        self.deadline_s = deadline_s
        self.builder_bytes = builder_bytes
        self.doctor_bytes = doctor_bytes
        self.busy_timeout_s = deadline_s if busy_timeout_s is None else busy_timeout_s
        self.stuck_after_s = stuck_after_s
        self._queue_size = queue_size
        self._send: MemoryObjectSendStream[_Request] | None = None
        self._serving = False
        self._starts = 0
        self._requests = 0
        self._timeouts = 0
        self._errors = 0
        self._healthy = True
        self._last_error: str | None = None

    def client(self) -> MemoryClient:
        """A handle for callers; valid across restarts of :meth:`serve`."""
        return MemoryClient(self)

    def statistics(self) -> MemoryStats:
        """A frozen snapshot (see :class:`MemoryStats`)."""
        if not self.enabled:
            state = "disabled"
        elif not self._serving:
            state = "down"
        else:
            state = "ok" if self._healthy else "degraded"
        depth = self._send.statistics().current_buffer_used if self._send is not None else 0
        return MemoryStats(state=state, requests=self._requests, timeouts=self._timeouts,
                           errors=self._errors, restarts=max(self._starts - 1, 0),
                           last_error=self._last_error, queue_depth=depth)

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                    ) -> None:
        """Serve requests until cancelled. Raises :class:`MemoryStuck` when the SQL thread hangs.

        Opens a fresh channel and thread each time it is called, so the
        supervisor can restart it. Calls ``task_status.started()`` once
        requests are accepted (the database is opened lazily by the first).
        """
        if self._serving:
            raise RuntimeError("MemoryActor.serve is already running")
        self._starts += 1
        send, recv = anyio.create_memory_object_stream[_Request](self._queue_size)
        worker = _Worker(self.db_path, self.busy_timeout_s, self._starts)
        current: _Request | None = None
        self._send, self._serving, self._healthy = send, True, True
        try:
            task_status.started()
            async for req in recv:
                if req.abandoned or anyio.current_time() >= req.expires:
                    req.fail(_Unavailable("request expired before memory got to it"))
                    continue
                current = req
                await hit_async("memory.serve")
                await self._run(worker, req)
                current = None
        finally:
            self._send, self._serving = None, False
            gone = _Unavailable("memory actor stopped")
            if current is not None:
                current.fail(gone)
            while True:
                try:
                    recv.receive_nowait().fail(gone)
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
            send.close()
            recv.close()
            worker.stop()

    async def _run(self, worker: _Worker, req: _Request) -> None:
        with anyio.move_on_after(self.stuck_after_s) as scope:
            try:
                await hit_async(req.failpoint)  # a sleep here is a slow or stuck SQL thread
                req.result = await worker.call(req.fn)
            except FailpointPanic:
                raise  # a bug's stand-in: the actor crashes, the supervisor restarts it
            except Exception as exc:
                if not isinstance(exc, sqlite3.Error):
                    LOGGER.warning("memory: request failed", exc_info=True)
                req.fail(exc)
            else:
                req.done.set()
        if scope.cancelled_caught:
            raise MemoryStuck(f"memory SQL thread did not answer within {self.stuck_after_s:g}s")

    # ------------------------------------------------------------------ used by MemoryClient
    async def _call(self, fn: Callable[[_MemoryDB], T], what: str) -> tuple[bool, T | None]:
        """``(True, result)``, or ``(False, None)`` when memory could not answer in time."""
        self._requests += 1
        send = self._send
        if send is None:
            self._note_failure(f"{what}: memory actor is down")
            return False, None
        req = _Request(fn, expires=anyio.current_time() + self.deadline_s,
                       failpoint=f"memory.{what}")
        try:
            with anyio.move_on_after(self.deadline_s) as scope:
                try:
                    await send.send(req)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    self._note_failure(f"{what}: memory actor is down")
                    return False, None
                await req.done.wait()
        finally:
            # Timed out, or the caller itself was cancelled: the actor may skip it.
            req.abandoned = not req.done.is_set()
        if scope.cancelled_caught and not req.done.is_set():
            self._timeouts += 1
            self._note_failure(f"{what}: no answer within {self.deadline_s:g}s", count=False)
            return False, None
        if req.error is not None:
            self._note_failure(f"{what}: {type(req.error).__name__}: {req.error}")
            return False, None
        self._note_success()
        return True, req.result

    def _note_failure(self, message: str, *, count: bool = True) -> None:
        if count:
            self._errors += 1
        # Warn on the transition only: a memory that is down must not flood the log.
        log = LOGGER.warning if self._healthy else LOGGER.debug
        log("memory degraded: %s", message)
        self._healthy = False
        self._last_error = message

    def _note_success(self) -> None:
        if not self._healthy:
            LOGGER.info("memory answers again")
        self._healthy = True


class MemoryClient:
    """What runs and the control server use to talk to memory. Never raises for memory problems."""

    def __init__(self, actor: MemoryActor) -> None:
        self._actor = actor

    @property
    def enabled(self) -> bool:
        return self._actor.enabled

    async def context_for(self, run_id: str, phase_id: str | None, role: str,
                          failure: Classification | None = None) -> ContextResult:
        """The bounded context for a prompt of ``role`` (``"builder"`` or ``"doctor"``).

        Builder prompts should pass no ``failure`` (lessons are then looked up
        for the phase's latest recorded failure, which is what ``autopackctl
        context`` shows); Doctor prompts pass the classification at hand.
        Empty and ``degraded=True`` when memory cannot answer within the
        deadline; empty and not degraded when the feature is off or the run is
        unknown to memory.
        """
        actor = self._actor
        if not actor.enabled:
            return ContextResult("", 0, degraded=False)
        limit = actor.doctor_bytes if role == "doctor" else actor.builder_bytes
        lessons_limit = 3 if role == "doctor" else 5

        def fn(db: _MemoryDB) -> str:
            return db.context(run_id, phase_id, role, failure, limit, lessons_limit)

        ok, text = await actor._call(fn, "context_for")
        if not ok or text is None:
            return ContextResult("", 0, degraded=True)
        return ContextResult(text, utf8_len(text), degraded=False)

    async def record_intention(self, run_id: str, repo: str, spec: RunSpec) -> bool:
        """Store the run's intention (idempotent: call again on resume). False if not stored."""
        intention = _intention_of(spec)
        ok, _ = await self._actor._call(
            lambda db: db.record_intention(run_id, repo, intention), "record_intention")
        return ok

    def preview(self, spec: RunSpec, phase_id: str | None, role: str) -> ContextResult:
        """The context a prompt of ``role`` gets for a run memory has not recorded yet (its
        first prompt records the intention, then asks): the intention and the phase's goal,
        bounded like :meth:`context_for`. Pure: no thread, no SQL; empty when memory is off."""
        actor = self._actor
        if not actor.enabled:
            return ContextResult("", 0, degraded=False)
        intention = _intention_of(spec)
        limit = actor.doctor_bytes if role == "doctor" else actor.builder_bytes
        text = build_context(intention, intention.phase_goal(phase_id), [], [], role=role,
                             limit_bytes=limit, phase_id=phase_id)
        return ContextResult(text, utf8_len(text), degraded=False)

    async def record_outcome(self, run_id: str, phase_id: str, attempt: int, *, tried: str,
                             pattern: str | None, evidence: str, worked: bool,
                             fix: str | None = None) -> bool:
        """Record one attempt's outcome. A ``worked`` outcome after failed ones teaches lessons
        (``fix``, else ``tried``, is the fix text). False if possibly not stored."""
        ok, _ = await self._actor._call(
            lambda db: db.record_outcome(run_id, phase_id, attempt, tried, pattern, evidence,
                                         worked, fix), "record_outcome")
        return ok

    async def record_lesson(self, repo: str, signature: str, fix: str,
                            pattern: str | None = None) -> bool:
        """Store (or count again) a lesson for ``repo``. False if possibly not stored."""
        ok, _ = await self._actor._call(
            lambda db: db.record_lesson(repo, signature, fix, pattern), "record_lesson")
        return ok

    async def lessons(self, repo: str | None, search: str | None,
                      limit: int = 50) -> list[dict[str, Any]] | None:
        """Lessons (newest first, or best BM25 match first with ``search``); None when degraded.

        Each is a dict with ``id, repo, signature, fix, pattern, seen, created_at, updated_at``.
        """
        limit = max(1, min(limit, 1000))

        def fn(db: _MemoryDB) -> list[dict[str, Any]]:
            if search and search.strip():
                return db.search_lessons(repo, [search], limit)
            return db.recent_lessons(repo, limit)

        ok, found = await self._actor._call(fn, "lessons")
        return found if ok else None


def _intention_of(spec: RunSpec) -> Intention:
    return Intention(
        goal=spec.goal, constraints=tuple(spec.constraints), non_goals=tuple(spec.non_goals),
        acceptance=tuple(spec.acceptance), phases=tuple((p.id, p.goal) for p in spec.phases))


# ---------------------------------------------------------------------- control-server helpers
async def handle_get_context(memory: MemoryClient, req: GetContext, *,
                             current_phase: str | None = None,
                             pending_spec: RunSpec | None = None) -> ContextReply | Error:
    """Answer ``autopackctl context``: what the run's next prompt would get. ``current_phase``
    (from the Store) is used when the request names no phase. ``pending_spec`` (a run that
    can still prompt) stands in for an intention memory has not recorded yet: a run whose
    phases have not called a model. Degraded memory is a normal reply with ``degraded=True``."""
    if req.role not in ("builder", "doctor"):
        return Error(code=ErrorCode.NOT_SUPPORTED,
                     message=f"unknown role {req.role!r} (builder or doctor)")
    phase = req.phase or current_phase
    result = await memory.context_for(req.run_id, phase, req.role)
    if pending_spec is not None and not result.degraded and not result.text:
        result = memory.preview(pending_spec, phase, req.role)
    return ContextReply(text=result.text, bytes=result.bytes, degraded=result.degraded)


async def handle_get_lessons(memory: MemoryClient, req: GetLessons) -> Lessons | Error:
    """Answer ``autopackctl lessons``; an ``unavailable`` error when memory is degraded."""
    found = await memory.lessons(req.repo, req.search, req.limit)
    if found is None:
        return Error(code=ErrorCode.UNAVAILABLE, message="memory is degraded; try again later")
    return Lessons(lessons=found)

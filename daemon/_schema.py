"""Schema of the run database and its forward migrations (keyed on ``PRAGMA user_version``).

Add a migration by appending to ``MIGRATIONS``; never edit a released one.
The memory actor keeps its own ``mem_*`` tables and versions them itself.
"""

from __future__ import annotations

import sqlite3

from ._errors import SchemaTooNew as SchemaTooNew

_UPSERT = "INSERT INTO counters(key, n) VALUES ({key}, {delta}) ON CONFLICT(key) DO UPDATE SET n = n + {delta};"

COUNTERS_DDL = f"""
    CREATE TABLE counters (key TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TRIGGER runs_counted_insert AFTER INSERT ON runs BEGIN
        {_UPSERT.format(key="'runs.' || NEW.state", delta=1)}
    END;
    CREATE TRIGGER runs_counted_delete AFTER DELETE ON runs BEGIN
        {_UPSERT.format(key="'runs.' || OLD.state", delta=-1)}
    END;
    CREATE TRIGGER runs_counted_state AFTER UPDATE OF state ON runs
        WHEN OLD.state IS NOT NEW.state BEGIN
        {_UPSERT.format(key="'runs.' || OLD.state", delta=-1)}
        {_UPSERT.format(key="'runs.' || NEW.state", delta=1)}
    END;
    CREATE TRIGGER phases_counted_insert AFTER INSERT ON phases BEGIN
        {_UPSERT.format(key="'phase_attempts'", delta="NEW.attempts")}
        {_UPSERT.format(key="'doctor_calls'", delta="NEW.doctor_calls")}
    END;
    CREATE TRIGGER phases_counted_delete AFTER DELETE ON phases BEGIN
        {_UPSERT.format(key="'phase_attempts'", delta="-OLD.attempts")}
        {_UPSERT.format(key="'doctor_calls'", delta="-OLD.doctor_calls")}
    END;
    CREATE TRIGGER phases_counted_update AFTER UPDATE OF attempts, doctor_calls ON phases
        WHEN OLD.attempts IS NOT NEW.attempts OR OLD.doctor_calls IS NOT NEW.doctor_calls BEGIN
        {_UPSERT.format(key="'phase_attempts'", delta="NEW.attempts - OLD.attempts")}
        {_UPSERT.format(key="'doctor_calls'", delta="NEW.doctor_calls - OLD.doctor_calls")}
    END;
"""

MIGRATIONS: list[str] = [
    # 1: runs, phases, attempts, events, llm calls, processes
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        state TEXT NOT NULL,
        reason TEXT,
        goal TEXT NOT NULL,
        repo TEXT NOT NULL,
        base TEXT NOT NULL,
        base_commit TEXT,
        branch TEXT NOT NULL,
        spec TEXT NOT NULL,
        arm TEXT NOT NULL DEFAULT 'hardened',
        created_at REAL NOT NULL,
        started_at REAL,
        ended_at REAL,
        final_commit TEXT,
        report_path TEXT
    );
    CREATE INDEX runs_by_state ON runs(state, seq);
    CREATE TABLE phases (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        id TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        doctor_calls INTEGER NOT NULL DEFAULT 0,
        reason TEXT,
        commit_sha TEXT,
        started_at REAL,
        ended_at REAL,
        PRIMARY KEY (run_id, idx)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        phase_id TEXT,
        attempt INTEGER,
        kind TEXT NOT NULL,
        ts REAL NOT NULL,
        payload TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_by_run ON events(run_id, id);
    CREATE INDEX events_by_kind ON events(kind, ts);
    CREATE TABLE llm_calls (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        phase_id TEXT,
        attempt INTEGER,
        role TEXT NOT NULL,
        model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cache_creation INTEGER NOT NULL DEFAULT 0,
        cache_read INTEGER NOT NULL DEFAULT 0,
        ts REAL NOT NULL
    );
    CREATE INDEX llm_calls_by_run ON llm_calls(run_id);
    CREATE TABLE processes (
        pgid INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        command TEXT NOT NULL,
        started_at REAL NOT NULL,
        daemon_pid INTEGER NOT NULL,
        boot_id TEXT
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: indexes for stats over long histories (--since, failures by pattern); retention
    """
    ALTER TABLE runs ADD COLUMN pruned_at REAL;
    CREATE INDEX runs_by_created ON runs(created_at);
    CREATE INDEX events_classified ON events(
        json_extract(payload, '$.pattern'),
        CAST(COALESCE(json_extract(payload, '$.tokens_avoided'), 0) AS INTEGER))
        WHERE kind = 'classified';
    """,
    # 3: constant-time status: counters kept by triggers in the transaction of every change
    # (runs by state, phase attempts, doctor calls), rebuilt here from a full count
    COUNTERS_DDL + """
    INSERT INTO counters(key, n) SELECT 'runs.' || state, COUNT(*) FROM runs GROUP BY state;
    INSERT INTO counters(key, n) SELECT 'phase_attempts', COALESCE(SUM(attempts), 0) FROM phases;
    INSERT INTO counters(key, n) SELECT 'doctor_calls', COALESCE(SUM(doctor_calls), 0) FROM phases;
    """,
    # 4: the price of every LLM call (picodollars, 10^-12 USD; NULL for calls recorded
    # before prices were kept), and spending per day for the daily budget
    """
    ALTER TABLE llm_calls ADD COLUMN cost_pusd INTEGER;
    CREATE INDEX llm_calls_by_ts ON llm_calls(ts);
    """,
    # 5: the dashboard's run list filtered by repository pages on an index
    """
    CREATE INDEX runs_by_repo ON runs(repo, seq);
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring ``conn``'s database to ``SCHEMA_VERSION``; returns the version found before."""
    (found,) = conn.execute("PRAGMA user_version").fetchone()
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"database schema v{found} is newer than this autopack (v{SCHEMA_VERSION}); upgrade autopack"
        )
    for version in range(found, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _split(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return int(found)


def _split(script: str) -> list[str]:
    # executescript() would COMMIT implicitly; split so each migration is one transaction.
    # A trigger body holds ';' too: a piece ends only where SQLite says a statement is complete.
    out: list[str] = []
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n;"):
                out.append(buf.strip())
            buf = ""
    if buf.strip(" \n;"):
        out.append(buf.strip())
    return out


def counted(conn: sqlite3.Connection) -> dict[str, int]:
    """The maintained counters (``runs.<state>``, ``phase_attempts``, ``doctor_calls``);
    states with no run left are omitted. One short index read, whatever the history."""
    return {str(k): int(n) for k, n in conn.execute("SELECT key, n FROM counters")
            if n or not str(k).startswith("runs.")}


def recount(conn: sqlite3.Connection) -> dict[str, int]:
    """The same figures from a full scan (what :func:`counted` must always equal; zeros
    included only where a counter row exists)."""
    full = {f"runs.{s}": int(n) for s, n in conn.execute(
        "SELECT state, COUNT(*) FROM runs GROUP BY state")}
    attempts, doctor = conn.execute(
        "SELECT COALESCE(SUM(attempts), 0), COALESCE(SUM(doctor_calls), 0) FROM phases").fetchone()
    full["phase_attempts"], full["doctor_calls"] = int(attempts), int(doctor)
    return full


def rebuild_counters(conn: sqlite3.Connection) -> None:
    """Recompute every counter from a full scan (inside the caller's transaction)."""
    conn.execute("DELETE FROM counters")
    conn.executemany("INSERT INTO counters(key, n) VALUES (?, ?)", recount(conn).items())

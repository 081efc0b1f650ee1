"""Schema of the run database and its forward migrations (keyed on ``PRAGMA user_version``).

Add a migration by appending to ``MIGRATIONS``; never edit a released one.
The memory actor keeps its own ``mem_*`` tables and versions them itself.
"""

from __future__ import annotations

import sqlite3

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
]

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(Exception):
    """Raised when the database was written by a newer autopack (downgrade is refused)."""


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
    # executescript() would COMMIT implicitly; split so each migration is one transaction
    return [s.strip() for s in script.split(";") if s.strip()]

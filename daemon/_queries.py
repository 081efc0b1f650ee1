"""SQL of the run database. Every function runs on the store thread: ``fn(conn, ...)``.

State changes go through the state machine of ``autopack.actors._states`` and
write their event in the same transaction (a phase completion and its event
are one commit).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import msgspec
from autopack.actors._states import (
    TERMINAL_RUN_STATES,
    check_phase_transition,
    check_run_transition,
)
from autopack.protocol import RunSpec

from ._errors import UnknownRun as UnknownRun
from ._schema import counted

_json_enc = msgspec.json.Encoder()
_json_dec = msgspec.json.Decoder()


def dumps(obj: Any) -> str:
    return _json_enc.encode(obj).decode()


def loads(text: str | None) -> Any:
    return _json_dec.decode(text) if text else {}


def _event(conn: sqlite3.Connection, run_id: str, phase_id: str | None, attempt: int | None,
           kind: str, ts: float, payload: dict[str, Any] | None) -> int:
    cur = conn.execute(
        "INSERT INTO events(run_id, phase_id, attempt, kind, ts, payload) VALUES (?,?,?,?,?,?)",
        (run_id, phase_id, attempt, kind, ts, dumps(payload or {})),
    )
    return int(cur.lastrowid or 0)


def insert_run(conn: sqlite3.Connection, make_id: Callable[[], str], spec: RunSpec, repo: str,
               arm: str, ts: float) -> str:
    run_id = make_id()
    while conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
        run_id = make_id()
    (seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs").fetchone()
    conn.execute(
        "INSERT INTO runs(id, seq, state, goal, repo, base, branch, spec, arm, created_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?)",
        (run_id, seq, "queued", spec.goal, repo, spec.base, f"autopack/{run_id}",
         dumps(spec), arm, ts),
    )
    conn.executemany(
        "INSERT INTO phases(run_id, idx, id, kind, state) VALUES (?,?,?,?, 'queued')",
        [(run_id, i, p.id, p.kind) for i, p in enumerate(spec.phases)],
    )
    _event(conn, run_id, None, None, "submitted", ts,
           {"repo": repo, "phases": len(spec.phases), "arm": arm})
    return run_id


def get_run(conn: sqlite3.Connection, run_id: str) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise UnknownRun(run_id)
    run = dict(row)
    run["phases"] = [
        dict(r) for r in conn.execute(
            "SELECT * FROM phases WHERE run_id = ? ORDER BY idx", (run_id,))
    ]
    return run


def list_runs(conn: sqlite3.Connection, state: str | None, limit: int, *,
              states: list[str] | None = None, before: int | None = None) -> list[dict[str, Any]]:
    """Newest first (by ``seq``), with their phases: two queries whatever the number of runs.

    ``state``/``states`` keep runs in any of those states; ``before`` keeps runs with a
    ``seq`` below it (the paging cursor). Each row carries its ``seq``.
    """
    wanted = ([state] if state else []) + list(states or [])
    conds: list[str] = []
    args: list[Any] = []
    if wanted:
        conds.append(f"state IN ({','.join('?' * len(wanted))})")
        args += wanted
    if before is not None:
        conds.append("seq < ?")
        args.append(before)
    where = ("WHERE " + " AND ".join(conds)) if conds else ""
    runs = [dict(r) for r in conn.execute(
        f"SELECT * FROM runs {where} ORDER BY seq DESC LIMIT ?", (*args, limit))]
    if not runs:
        return []
    by_id = {r["id"]: r for r in runs}
    for r in runs:
        r["phases"] = []
    marks = ",".join("?" * len(runs))
    for p in conn.execute(f"SELECT * FROM phases WHERE run_id IN ({marks}) ORDER BY run_id, idx",
                          list(by_id)):
        by_id[p["run_id"]]["phases"].append(dict(p))
    return runs


def run_ids_in_states(conn: sqlite3.Connection, states: list[str]) -> list[str]:
    marks = ",".join("?" * len(states))
    return [r["id"] for r in conn.execute(
        f"SELECT id FROM runs WHERE state IN ({marks}) ORDER BY seq", states)]


def count_by_state(conn: sqlite3.Connection) -> dict[str, int]:
    """Runs by state (states with none left out), from the counters the triggers of
    schema v3 keep: constant time at any history length."""
    return {k[5:]: n for k, n in counted(conn).items() if k.startswith("runs.")}


def set_run_state(conn: sqlite3.Connection, run_id: str, target: str, reason: str | None,
                  ts: float, payload: dict[str, Any] | None = None) -> str:
    row = conn.execute("SELECT state FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise UnknownRun(run_id)
    check_run_transition(row["state"], target)
    sets = "state = ?, reason = ?"
    args: list[Any] = [target, reason]
    if target == "running":
        sets += ", started_at = COALESCE(started_at, ?)"
        args.append(ts)
    if target in TERMINAL_RUN_STATES:
        sets += ", ended_at = ?"
        args.append(ts)
    conn.execute(f"UPDATE runs SET {sets} WHERE id = ?", (*args, run_id))
    _event(conn, run_id, None, None, "run_" + target, ts,
           {"from": row["state"], "reason": reason, **(payload or {})})
    return str(row["state"])


def set_run_fields(conn: sqlite3.Connection, run_id: str, **fields: Any) -> None:
    allowed = {"base_commit", "final_commit", "report_path", "reason"}
    bad = set(fields) - allowed
    if bad:
        raise ValueError(f"not settable: {bad}")
    cols = ", ".join(f"{k} = ?" for k in fields)
    conn.execute(f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), run_id))


def pin_base_commits(conn: sqlite3.Connection, pins: list[tuple[str, str]]) -> None:
    """Record each run's base commit unless the run already has one."""
    conn.executemany("UPDATE runs SET base_commit = ? WHERE id = ? AND base_commit IS NULL",
                     [(sha, run_id) for run_id, sha in pins])


def set_phase_state(conn: sqlite3.Connection, run_id: str, idx: int, target: str, ts: float, *,
                    reason: str | None = None, commit: str | None = None,
                    payload: dict[str, Any] | None = None) -> None:
    row = conn.execute("SELECT id, state, attempts FROM phases WHERE run_id = ? AND idx = ?",
                       (run_id, idx)).fetchone()
    if row is None:
        raise UnknownRun(f"{run_id} phase #{idx}")
    check_phase_transition(row["state"], target)
    sets = "state = ?, reason = ?, commit_sha = COALESCE(?, commit_sha)"
    args: list[Any] = [target, reason, commit]
    if target == "running":
        sets += ", started_at = COALESCE(started_at, ?)"
        args.append(ts)
    else:
        sets += ", ended_at = ?"
        args.append(ts)
    conn.execute(f"UPDATE phases SET {sets} WHERE run_id = ? AND idx = ?", (*args, run_id, idx))
    _event(conn, run_id, row["id"], row["attempts"] or None, "phase_" + target, ts,
           {"reason": reason, "commit": commit, **(payload or {})})


def begin_attempt(conn: sqlite3.Connection, run_id: str, idx: int, ts: float,
                  payload: dict[str, Any] | None = None) -> int:
    row = conn.execute("SELECT id, attempts FROM phases WHERE run_id = ? AND idx = ?",
                       (run_id, idx)).fetchone()
    if row is None:
        raise UnknownRun(f"{run_id} phase #{idx}")
    n = int(row["attempts"]) + 1
    conn.execute("UPDATE phases SET attempts = ? WHERE run_id = ? AND idx = ?", (n, run_id, idx))
    _event(conn, run_id, row["id"], n, "attempt_started", ts, payload)
    return n


def add_doctor_call(conn: sqlite3.Connection, run_id: str, idx: int, ts: float = 0.0) -> int:
    """Count one Doctor call of the phase, with its ``doctor_asked`` event in the same
    transaction (the run engine's replay counts the calls from the events)."""
    row = conn.execute("SELECT id, attempts FROM phases WHERE run_id = ? AND idx = ?",
                       (run_id, idx)).fetchone()
    if row is None:
        raise UnknownRun(f"{run_id} phase #{idx}")
    conn.execute("UPDATE phases SET doctor_calls = doctor_calls + 1 WHERE run_id = ? AND idx = ?",
                 (run_id, idx))
    _event(conn, run_id, row["id"], row["attempts"] or None, "doctor_asked", ts, {})
    (total,) = conn.execute("SELECT SUM(doctor_calls) FROM phases WHERE run_id = ?",
                            (run_id,)).fetchone()
    return int(total or 0)


def add_event(conn: sqlite3.Connection, run_id: str, phase_id: str | None, attempt: int | None,
              kind: str, ts: float, payload: dict[str, Any] | None) -> int:
    return _event(conn, run_id, phase_id, attempt, kind, ts, payload)


def events_after(conn: sqlite3.Connection, run_id: str, after: int,
                 limit: int = 1000) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT id, run_id, phase_id, attempt, kind, ts, payload FROM events"
        " WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?", (run_id, after, limit)).fetchall()
    return [{**dict(r), "payload": loads(r["payload"])} for r in rows]


def record_llm_call(conn: sqlite3.Connection, run_id: str, phase_id: str | None,
                    attempt: int | None, role: str, model: str, usage: dict[str, int],
                    ts: float, cost_pusd: int | None = None) -> dict[str, int]:
    conn.execute(
        "INSERT INTO llm_calls(run_id, phase_id, attempt, role, model, input_tokens,"
        " output_tokens, cache_creation, cache_read, ts, cost_pusd)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (run_id, phase_id, attempt, role, model, usage.get("input", 0), usage.get("output", 0),
         usage.get("cache_creation", 0), usage.get("cache_read", 0), ts, cost_pusd))
    return run_tokens(conn, run_id)


_SPEND = ("COALESCE(SUM(input_tokens + output_tokens + cache_creation + cache_read), 0),"
          " COALESCE(SUM(cost_pusd), 0)")


def run_spend(conn: sqlite3.Connection, run_id: str, phase_id: str) -> dict[str, int]:
    """Tokens and pUSD spent by a run and by one of its phases (the budgets' ``spent``)."""
    run = conn.execute(f"SELECT {_SPEND} FROM llm_calls WHERE run_id = ?", (run_id,)).fetchone()
    phase = conn.execute(f"SELECT {_SPEND} FROM llm_calls WHERE run_id = ? AND phase_id = ?",
                         (run_id, phase_id)).fetchone()
    return {"run_tokens": int(run[0]), "run_pusd": int(run[1]),
            "phase_tokens": int(phase[0]), "phase_pusd": int(phase[1])}


def spend_since(conn: sqlite3.Connection, since_ts: float) -> tuple[int, int]:
    """Tokens and pUSD spent by every run since ``since_ts`` (the daily budget's start)."""
    row = conn.execute(f"SELECT {_SPEND} FROM llm_calls WHERE ts >= ?", (since_ts,)).fetchone()
    return int(row[0]), int(row[1])


def run_llm_calls(conn: sqlite3.Connection, run_id: str) -> list[dict[str, Any]]:
    """Every LLM call of a run, in order, with its tokens and cost (pUSD, or None)."""
    rows = conn.execute(
        "SELECT phase_id, attempt, role, model, input_tokens, output_tokens, cache_creation,"
        " cache_read, cost_pusd, ts FROM llm_calls WHERE run_id = ? ORDER BY id", (run_id,))
    keys = ("phase_id", "attempt", "role", "model", "input", "output", "cache_creation",
            "cache_read", "cost_pusd", "ts")
    return [dict(zip(keys, tuple(r), strict=True)) for r in rows.fetchall()]


def run_tokens(conn: sqlite3.Connection, run_id: str | None = None) -> dict[str, int]:
    where, args = ("WHERE run_id = ?", (run_id,)) if run_id else ("", ())
    row = conn.execute(
        "SELECT COALESCE(SUM(input_tokens),0) AS input, COALESCE(SUM(output_tokens),0) AS output,"
        " COALESCE(SUM(cache_creation),0) AS cache_creation,"
        f" COALESCE(SUM(cache_read),0) AS cache_read FROM llm_calls {where}", args).fetchone()
    return {k: int(row[k]) for k in ("input", "output", "cache_creation", "cache_read")}


def mean_doctor_tokens(conn: sqlite3.Connection) -> float | None:
    row = conn.execute(
        "SELECT AVG(input_tokens + output_tokens + cache_creation + cache_read) AS m, COUNT(*) AS n"
        " FROM llm_calls WHERE role = 'doctor'").fetchone()
    return float(row["m"]) if row["n"] else None


def add_process(conn: sqlite3.Connection, pgid: int, run_id: str, command: str, ts: float,
                daemon_pid: int, boot_id: str | None) -> None:
    conn.execute("INSERT OR REPLACE INTO processes VALUES (?,?,?,?,?,?)",
                 (pgid, run_id, command, ts, daemon_pid, boot_id))


def remove_process(conn: sqlite3.Connection, pgid: int) -> None:
    conn.execute("DELETE FROM processes WHERE pgid = ?", (pgid,))


def take_processes(conn: sqlite3.Connection, daemon_pid: int) -> list[dict[str, Any]]:
    """Processes recorded by other (dead) daemons; removed from the table as they are returned."""
    rows = [dict(r) for r in conn.execute(
        "SELECT * FROM processes WHERE daemon_pid != ?", (daemon_pid,))]
    conn.execute("DELETE FROM processes WHERE daemon_pid != ?", (daemon_pid,))
    return rows


def run_events(conn: sqlite3.Connection, run_id: str) -> list[dict[str, Any]]:
    return events_after(conn, run_id, 0, limit=1_000_000)


def ended_runs_before(conn: sqlite3.Connection, ts: float) -> list[dict[str, Any]]:
    """Ended runs older than ``ts`` whose branch and report were not pruned yet."""
    return [dict(r) for r in conn.execute(
        "SELECT id, repo, branch, report_path FROM runs WHERE state IN"
        " ('succeeded','failed','cancelled') AND ended_at < ? AND pruned_at IS NULL", (ts,))]


def mark_pruned(conn: sqlite3.Connection, run_id: str, ts: float) -> None:
    conn.execute("UPDATE runs SET pruned_at = ?, report_path = NULL WHERE id = ?", (ts, run_id))
    _event(conn, run_id, None, None, "pruned", ts, {"what": "branch and report (retention)"})

"""The dashboard's read queries. Each is ``fn(conn, ...)`` and runs on the store's read
connection (``await store.read(fn, ...)``): never behind a batch of writes.

The run list pages on the ``runs.seq`` index (keyset paging: ``before``/``after`` a
sequence number, newest first), so a page costs the same at 100 or 100,000 runs; the
per-run figures of a page are a handful of ``IN (…)`` queries over the page's ids on
the per-run indexes (phases' primary key, ``llm_calls_by_run``, ``events_by_run``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import msgspec

_dec = msgspec.json.Decoder()
TOKEN_KINDS = ("input", "output", "cache_creation", "cache_read")
MAX_DETAIL_EVENTS = 5000


@dataclass(frozen=True)
class ListFilter:
    """What the run list shows: filters, a keyset cursor and the page size."""

    state: str | None = None
    repo: str | None = None
    text: str | None = None
    before: int | None = None  # seq: rows older than this (next page)
    after: int | None = None  # seq: rows newer than this (previous page)
    limit: int = 50


def _where(f: ListFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if f.state:
        clauses.append("state = ?")
        args.append(f.state)
    if f.repo:
        clauses.append("repo = ?")
        args.append(f.repo)
    if f.text:
        like = "%" + f.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        clauses.append("(goal LIKE ? ESCAPE '\\' OR id LIKE ? ESCAPE '\\')")
        args += [like, like]
    return " AND ".join(clauses), args


_RUN_COLS = ("id, seq, state, reason, goal, repo, branch, arm, created_at, started_at, "
             "ended_at, report_path")


def list_page(conn: sqlite3.Connection, f: ListFilter) -> dict[str, Any]:
    """One page of runs, newest first: ``{"rows", "total", "older", "newer"}`` where
    ``older``/``newer`` are the cursors of the neighbouring pages (``None`` at an end)."""
    where, args = _where(f)
    cond = [where] if where else []
    if f.after is not None:
        cond.append("seq > ?")
        order = "ASC"
        cursor_args = [f.after]
    else:
        order = "DESC"
        cursor_args = [f.before] if f.before is not None else []
        if f.before is not None:
            cond.append("seq < ?")
    sql = (f"SELECT {_RUN_COLS} FROM runs" + (" WHERE " + " AND ".join(cond) if cond else "")
           + f" ORDER BY seq {order} LIMIT ?")
    rows = [dict(r) for r in conn.execute(sql, [*args, *cursor_args, f.limit + 1])]
    more = len(rows) > f.limit
    rows = rows[:f.limit]
    if order == "ASC":
        rows.reverse()
    add_run_figures(conn, rows)
    total = conn.execute("SELECT COUNT(*) FROM runs" + (f" WHERE {where}" if where else ""),
                         args).fetchone()[0]
    older = newer = None
    if rows:
        first, last = rows[0]["seq"], rows[-1]["seq"]
        has_older = more if order == "DESC" else _exists(conn, where, args, "seq < ?", last)
        has_newer = (more if order == "ASC" else
                     f.before is not None and _exists(conn, where, args, "seq > ?", first))
        older = last if has_older else None
        newer = first if has_newer else None
    return {"rows": rows, "total": int(total), "older": older, "newer": newer}


def _exists(conn: sqlite3.Connection, where: str, args: list[Any], cond: str, seq: int) -> bool:
    sql = "SELECT 1 FROM runs WHERE " + (f"{where} AND " if where else "") + cond + " LIMIT 1"
    return conn.execute(sql, [*args, seq]).fetchone() is not None


def rows_for(conn: sqlite3.Connection, run_ids: list[str], f: ListFilter) -> dict[str, Any]:
    """The list rows of ``run_ids`` that pass ``f``'s filters (for live updates):
    ``{"rows": [...], "dropped": [ids that exist but no longer match]}``."""
    if not run_ids:
        return {"rows": [], "dropped": []}
    where, args = _where(f)
    marks = ",".join("?" * len(run_ids))
    sql = f"SELECT {_RUN_COLS} FROM runs WHERE id IN ({marks})" + (f" AND {where}" if where else "")
    rows = [dict(r) for r in conn.execute(sql + " ORDER BY seq DESC", [*run_ids, *args])]
    add_run_figures(conn, rows)
    found = {r["id"] for r in rows}
    return {"rows": rows, "dropped": [i for i in run_ids if i not in found]}


def add_run_figures(conn: sqlite3.Connection, rows: list[dict[str, Any]]) -> None:
    """Phase progress, attempts, tokens (by model, for cost), tokens avoided and the last
    event of each run, in place; a constant number of queries whatever the page size."""
    if not rows:
        return
    by_id = {r["id"]: r for r in rows}
    ids = list(by_id)
    marks = ",".join("?" * len(ids))
    for r in rows:
        r.update(phases_total=0, phases_done=0, attempts=0, current_phase=None,
                 current_idx=None, tokens=dict.fromkeys(TOKEN_KINDS, 0), cost_pusd=0,
                 unpriced_calls=0, avoided=0, last_event_id=None, last_event_ts=None)
    for p in conn.execute(
            f"SELECT run_id, idx, id, state, attempts FROM phases WHERE run_id IN ({marks})"
            " ORDER BY run_id, idx", ids):
        r = by_id[p["run_id"]]
        r["phases_total"] += 1
        r["attempts"] += p["attempts"]
        if p["state"] in ("succeeded", "skipped"):
            r["phases_done"] += 1
        if p["state"] == "running" and r["current_phase"] is None:
            r["current_phase"], r["current_idx"] = p["id"], p["idx"] + 1
    for t in conn.execute(
            "SELECT run_id, SUM(input_tokens), SUM(output_tokens), SUM(cache_creation),"
            " SUM(cache_read), SUM(cost_pusd), SUM(cost_pusd IS NULL) FROM llm_calls"
            f" WHERE run_id IN ({marks}) GROUP BY run_id", ids):
        r = by_id[t[0]]
        r["tokens"] = dict(zip(TOKEN_KINDS, (int(x or 0) for x in t[1:5]), strict=True))
        r["cost_pusd"], r["unpriced_calls"] = int(t[5] or 0), int(t[6] or 0)
    for a in conn.execute(
            "SELECT run_id, SUM(CAST(COALESCE(json_extract(payload, '$.tokens_avoided'), 0)"
            # "+kind": look up by run (events_by_run), never scan every run's credits by kind
            f" AS INTEGER)) FROM events WHERE run_id IN ({marks}) AND +kind = 'doctor_avoided'"
            " GROUP BY run_id", ids):
        by_id[a[0]]["avoided"] = int(a[1] or 0)
    for e in conn.execute(
            "SELECT run_id, id, ts FROM events WHERE id IN (SELECT MAX(id) FROM events"
            f" WHERE run_id IN ({marks}) GROUP BY run_id)", ids):
        by_id[e[0]]["last_event_id"], by_id[e[0]]["last_event_ts"] = e[1], e[2]


def repos(conn: sqlite3.Connection) -> list[str]:
    """Every repository that has runs (for the filter)."""
    return [r[0] for r in conn.execute("SELECT DISTINCT repo FROM runs ORDER BY repo")]


def max_seq(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM runs").fetchone()[0])


def last_event_id(conn: sqlite3.Connection, run_id: str | None = None) -> int:
    if run_id is None:
        row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
    else:
        row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events WHERE run_id = ?",
                           (run_id,)).fetchone()
    return int(row[0])


def run_detail(conn: sqlite3.Connection, run_id: str) -> dict[str, Any] | None:
    """Everything the detail page shows, or ``None`` for an unknown id: the run row with its
    phases and list figures, its events (payloads decoded, at most ``MAX_DETAIL_EVENTS``,
    the latest kept) and its LLM calls."""
    row = conn.execute(f"SELECT {_RUN_COLS}, base, base_commit, final_commit FROM runs"
                       " WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    run = dict(row)
    add_run_figures(conn, [run])
    run["phases"] = [dict(p) for p in conn.execute(
        "SELECT idx, id, kind, state, attempts, doctor_calls, reason, commit_sha, started_at,"
        " ended_at FROM phases WHERE run_id = ? ORDER BY idx", (run_id,))]
    (count,) = conn.execute("SELECT COUNT(*) FROM events WHERE run_id = ?", (run_id,)).fetchone()
    events = [{**dict(e), "payload": _dec.decode(e["payload"]) if e["payload"] else {}}
              for e in conn.execute(
                  "SELECT id, phase_id, attempt, kind, ts, payload FROM events WHERE run_id = ?"
                  " ORDER BY id DESC LIMIT ?", (run_id, MAX_DETAIL_EVENTS))]
    events.reverse()
    run["events"] = events
    run["events_total"] = int(count)
    run["llm_calls"] = [dict(c) for c in conn.execute(
        "SELECT id, phase_id, attempt, role, model, input_tokens, output_tokens, cache_creation,"
        " cache_read, cost_pusd, ts FROM llm_calls WHERE run_id = ? ORDER BY id", (run_id,))]
    return run


def events_since(conn: sqlite3.Connection, run_id: str | None, after: int,
                 limit: int = 1000) -> list[dict[str, Any]]:
    """Events after id ``after``, of one run or of all runs, oldest first (payload raw)."""
    args: tuple[Any, ...]
    if run_id is None:
        sql, args = ("SELECT id, run_id, phase_id, attempt, kind, ts FROM events WHERE id > ?"
                     " ORDER BY id LIMIT ?", (after, limit))
    else:
        sql, args = ("SELECT id, run_id, phase_id, attempt, kind, ts FROM events"
                     " WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?", (run_id, after, limit))
    return [dict(r) for r in conn.execute(sql, args)]


def day_figures(conn: sqlite3.Connection, since: float) -> dict[str, Any]:
    """Tokens, cost (pUSD) and LLM calls since ``since`` (today)."""
    row = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(input_tokens + output_tokens + cache_creation"
        " + cache_read), 0), COALESCE(SUM(cost_pusd), 0) FROM llm_calls WHERE ts >= ?",
        (since,)).fetchone()
    return {"calls": int(row[0]), "tokens": int(row[1]), "pusd": int(row[2])}

"""Stats and the metrics snapshot, checked against a run history written to a real SQLite file.

The history goes through the same ``_queries`` functions the run actor uses, so
the figures are read from exactly the rows and event payloads a daemon writes.

History (T = T0 + seconds; arms: H = hardened, B = baseline)::

    run  arm  created  state      phases (kind: attempts, failures, time)                     LLM calls
    H1   H    T+100    succeeded  deps (build: 3 att., python_missing_dep x2, 40 s),        builder 1000/200/50/400
                                  verify (command: 1 att., 20 s)
    H2   H    T+200    failed     fix (build: 3 att.; none -> Doctor, test_failure x2, 60 s) doctor 500/100, builder 2000/300
    H3   H    T+300    queued     fix (never started)
    B1   B    T+50     succeeded  fix (build: 2 att.; none -> Doctor, 30 s)                   doctor 700/150, builder 1500/250/0/100
    B2   B    T+400    cancelled  fix (build: 1 att., cancelled after 10 s)
    B3   B    T+500    succeeded  fix (build: 1 att., 25 s)                                   builder 800/100 (unpriced)

tokens_avoided: 3000 + 3000 (H1's two deterministic mitigations) + 2000 (H2's first test_failure).
Calls cost (pUSD): H1 builder 1.465e9, H2 doctor 0.7e9 + builder 2.6e9, B1 doctor 1.0e9 +
builder 2.01e9; B3's call has no price.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from autopack.daemon import _queries as q
from autopack.daemon._metrics import TOKEN_KINDS as METRIC_TOKEN_KINDS
from autopack.daemon._metrics import render_metrics
from autopack.daemon._schema import migrate
from autopack.daemon._stats import (
    TOKEN_KINDS,
    MetricsCache,
    compute_stats,
    metrics_snapshot,
    parse_duration,
)
from autopack.daemon.ctl._stats import cmd_stats, format_stats, register
from autopack.protocol import (
    Error,
    FrameBuffer,
    GetStats,
    Hello,
    PhaseSpec,
    RunSpec,
    Stats,
    Welcome,
    decode_request,
    encode_frame,
    recv_frame_blocking,
)
from prometheus_client.parser import text_string_to_metric_families

T0 = 1_700_000_000.0


# ---------------------------------------------------------------- history
def open_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row  # as the store opens it; _queries reads rows by name
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    migrate(conn)
    return conn


class History:
    """Writes runs through ``_queries`` as the run actor would."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._ids = (f"run{n}" for n in itertools.count(1))

    def run(self, arm: str, created: float, phases: list[tuple[str, str]]) -> str:
        spec = RunSpec(goal="g", phases=[PhaseSpec(id=pid, goal="g", kind=kind)  # type: ignore[arg-type]
                                         for pid, kind in phases])
        return q.insert_run(self.conn, lambda: next(self._ids), spec, "/repo", arm, T0 + created)

    def attempt(self, run_id: str, idx: int, phase_id: str, at: float, *,
                failure: str | None | bool = False, avoided: int = 0, doctor: bool = False) -> None:
        """One attempt; ``failure``: False = passed, None = unclassified, str = pattern id."""
        n = q.begin_attempt(self.conn, run_id, idx, T0 + at)
        q.add_event(self.conn, run_id, phase_id, n, "check_started", T0 + at, {"command": "make"})
        q.add_event(self.conn, run_id, phase_id, n, "check_finished", T0 + at + 1,
                    {"command": "make", "exit_code": 0 if failure is False else 1,
                     "duration_s": 1.0, "timed_out": False})
        if failure is False:
            return
        q.add_event(self.conn, run_id, phase_id, n, "classified", T0 + at + 1,
                    {"pattern": failure, "evidence": ["line"] if failure else [],
                     "command": "make", "doctor_avoidable": avoided})
        if avoided:  # credited when the phase then passes without the Doctor
            q.add_event(self.conn, run_id, phase_id, n, "doctor_avoided", T0 + at + 2,
                        {"pattern": failure, "tokens_avoided": avoided})
        if failure is not None:
            q.add_event(self.conn, run_id, phase_id, n, "mitigation", T0 + at + 1,
                        {"pattern": failure, "action": "retry", "summary": "s", "ok": True})
        if doctor:
            q.add_doctor_call(self.conn, run_id, idx)
            q.add_event(self.conn, run_id, phase_id, n, "doctor_called", T0 + at + 2,
                        {"decision": "retry", "tokens": 0})

    def llm(self, run_id: str, role: str, usage: dict[str, int], at: float, *,
            priced: bool = True) -> None:
        """One call, priced at $1 input, $2 output, $0.50 cache write, $0.10 cache read per
        Mtok (in pUSD per token: 1e6, 2e6, 5e5, 1e5), or recorded without a price."""
        cost = (usage.get("input", 0) * 10**6 + usage.get("output", 0) * 2 * 10**6
                + usage.get("cache_creation", 0) * 5 * 10**5 + usage.get("cache_read", 0) * 10**5)
        q.record_llm_call(self.conn, run_id, "p", 1, role, "claude-test", usage, T0 + at,
                          cost if priced else None)

    def state(self, run_id: str, target: str, at: float) -> None:
        q.set_run_state(self.conn, run_id, target, None, T0 + at)

    def phase(self, run_id: str, idx: int, target: str, at: float) -> None:
        q.set_phase_state(self.conn, run_id, idx, target, T0 + at)


def build_history(conn: sqlite3.Connection) -> dict[str, str]:
    h = History(conn)
    ids: dict[str, str] = {}

    ids["H1"] = r = h.run("hardened", 100, [("deps", "build"), ("verify", "command")])
    h.state(r, "running", 110)
    h.phase(r, 0, "running", 110)
    h.attempt(r, 0, "deps", 111, failure="python_missing_dep", avoided=3000)
    h.attempt(r, 0, "deps", 120, failure="python_missing_dep", avoided=3000)
    h.attempt(r, 0, "deps", 130)
    h.llm(r, "builder", {"input": 1000, "output": 200, "cache_creation": 50, "cache_read": 400}, 131)
    h.phase(r, 0, "succeeded", 150)
    h.phase(r, 1, "running", 150)
    h.attempt(r, 1, "verify", 151)
    h.phase(r, 1, "succeeded", 170)
    h.state(r, "succeeded", 170)

    ids["H2"] = r = h.run("hardened", 200, [("fix", "build")])
    h.state(r, "running", 210)
    h.phase(r, 0, "running", 210)
    h.attempt(r, 0, "fix", 211, failure=None, doctor=True)
    h.llm(r, "doctor", {"input": 500, "output": 100}, 213)
    h.attempt(r, 0, "fix", 220, failure="test_failure", avoided=2000)
    h.attempt(r, 0, "fix", 240, failure="test_failure", avoided=0)
    h.llm(r, "builder", {"input": 2000, "output": 300}, 250)
    h.phase(r, 0, "failed", 270)
    h.state(r, "failed", 270)

    ids["H3"] = h.run("hardened", 300, [("fix", "build")])

    ids["B1"] = r = h.run("baseline", 50, [("fix", "build")])
    h.state(r, "running", 60)
    h.phase(r, 0, "running", 60)
    h.attempt(r, 0, "fix", 61, failure=None, doctor=True)
    h.llm(r, "doctor", {"input": 700, "output": 150}, 63)
    h.attempt(r, 0, "fix", 70)
    h.llm(r, "builder", {"input": 1500, "output": 250, "cache_read": 100}, 71)
    h.phase(r, 0, "succeeded", 90)
    h.state(r, "succeeded", 90)

    ids["B2"] = r = h.run("baseline", 400, [("fix", "build")])
    h.state(r, "running", 410)
    h.phase(r, 0, "running", 410)
    h.attempt(r, 0, "fix", 411)
    h.phase(r, 0, "cancelled", 420)
    h.state(r, "cancelled", 420)

    ids["B3"] = r = h.run("baseline", 500, [("fix", "build")])
    h.state(r, "running", 510)
    h.phase(r, 0, "running", 510)
    h.attempt(r, 0, "fix", 511)
    h.llm(r, "builder", {"input": 800, "output": 100}, 512, priced=False)
    h.phase(r, 0, "succeeded", 535)
    h.state(r, "succeeded", 535)
    return ids


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = open_db(tmp_path / "runs.db")
    build_history(conn)
    yield conn
    conn.close()


@pytest.fixture
def empty_db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = open_db(tmp_path / "empty.db")
    yield conn
    conn.close()


def states(**counts: int) -> dict[str, int]:
    base = dict.fromkeys(("queued", "running", "succeeded", "failed", "cancelled", "interrupted"), 0)
    return {**base, **counts}


def tokens(inp: int, out: int, cc: int, cr: int) -> dict[str, int]:
    return {"input": inp, "output": out, "cache_creation": cc, "cache_read": cr,
            "total": inp + out + cc + cr}


# ---------------------------------------------------------------- expected figures
ALL = {
    "runs_total": 6,
    "runs_by_state": states(queued=1, succeeded=3, failed=1, cancelled=1),
    "runs_ended": 5,
    "success_rate": 3 / 5,
    "failures_total": 6,
    "failures_classified": 4,
    "failures_unclassified": 2,
    "failures_to_doctor": 2,
    "detection_rate": 4 / 6,
    "failures_by_pattern": {"none": 2, "python_missing_dep": 2, "test_failure": 2},
    "tokens_spent": tokens(6500, 1100, 50, 500),
    "tokens_by_role": {"builder": 6700, "doctor": 1450},
    "tokens_avoided": 8000,
    "tokens_per_run": 8150 / 5,
    "cost_usd": 7_775_000_000 / 10**12,
    "cost_usd_by_role": {"builder": 6_075_000_000 / 10**12, "doctor": 1_700_000_000 / 10**12},
    "cost_usd_per_run": 7_775_000_000 / 10**12 / 5,
    "unpriced_calls": 1,
    "cache_hit_rate": 500 / 7050,
    "attempts_per_run": 11 / 5,
    "doctor_calls_per_run": 2 / 5,
    "mean_phase_s": 185 / 6,
    "mean_phase_s_by_kind": {"build": 165 / 5, "command": 20.0},
}

HARDENED = {
    "runs_total": 3,
    "runs_by_state": states(queued=1, succeeded=1, failed=1),
    "runs_ended": 2,
    "success_rate": 1 / 2,
    "failures_total": 5,
    "failures_classified": 4,
    "failures_unclassified": 1,
    "failures_to_doctor": 1,
    "detection_rate": 4 / 5,
    "failures_by_pattern": {"none": 1, "python_missing_dep": 2, "test_failure": 2},
    "tokens_spent": tokens(3500, 600, 50, 400),
    "tokens_by_role": {"builder": 3950, "doctor": 600},
    "tokens_avoided": 8000,
    "tokens_per_run": 4550 / 2,
    "cost_usd": 4_765_000_000 / 10**12,
    "cost_usd_by_role": {"builder": 4_065_000_000 / 10**12, "doctor": 700_000_000 / 10**12},
    "cost_usd_per_run": 4_765_000_000 / 10**12 / 2,
    "unpriced_calls": 0,
    "cache_hit_rate": 400 / 3950,
    "attempts_per_run": 7 / 2,
    "doctor_calls_per_run": 1 / 2,
    "mean_phase_s": 120 / 3,
    "mean_phase_s_by_kind": {"build": 100 / 2, "command": 20.0},
}

BASELINE = {
    "runs_total": 3,
    "runs_by_state": states(succeeded=2, cancelled=1),
    "runs_ended": 3,
    "success_rate": 2 / 3,
    "failures_total": 1,
    "failures_classified": 0,
    "failures_unclassified": 1,
    "failures_to_doctor": 1,
    "detection_rate": 0.0,
    "failures_by_pattern": {"none": 1},
    "tokens_spent": tokens(3000, 500, 0, 100),
    "tokens_by_role": {"builder": 2750, "doctor": 850},
    "tokens_avoided": 0,
    "tokens_per_run": 3600 / 3,
    "cost_usd": 3_010_000_000 / 10**12,
    "cost_usd_by_role": {"builder": 2_010_000_000 / 10**12, "doctor": 1_000_000_000 / 10**12},
    "cost_usd_per_run": 3_010_000_000 / 10**12 / 3,
    "unpriced_calls": 1,
    "cache_hit_rate": 100 / 3100,
    "attempts_per_run": 4 / 3,
    "doctor_calls_per_run": 1 / 3,
    "mean_phase_s": 65 / 3,
    "mean_phase_s_by_kind": {"build": 65 / 3},
}

SINCE_150 = {  # H2, H3, B2, B3
    "runs_total": 4,
    "runs_by_state": states(queued=1, succeeded=1, failed=1, cancelled=1),
    "runs_ended": 3,
    "success_rate": 1 / 3,
    "failures_total": 3,
    "failures_classified": 2,
    "failures_unclassified": 1,
    "failures_to_doctor": 1,
    "detection_rate": 2 / 3,
    "failures_by_pattern": {"none": 1, "test_failure": 2},
    "tokens_spent": tokens(3300, 500, 0, 0),
    "tokens_by_role": {"builder": 3200, "doctor": 600},
    "tokens_avoided": 2000,
    "tokens_per_run": 3800 / 3,
    "cost_usd": 3_300_000_000 / 10**12,
    "cost_usd_by_role": {"builder": 2_600_000_000 / 10**12, "doctor": 700_000_000 / 10**12},
    "cost_usd_per_run": 3_300_000_000 / 10**12 / 3,
    "unpriced_calls": 1,
    "cache_hit_rate": 0.0,
    "attempts_per_run": 5 / 3,
    "doctor_calls_per_run": 1 / 3,
    "mean_phase_s": 95 / 3,
    "mean_phase_s_by_kind": {"build": 95 / 3},
}

EMPTY = {
    "runs_total": 0,
    "runs_by_state": states(),
    "runs_ended": 0,
    "success_rate": None,
    "failures_total": 0,
    "failures_classified": 0,
    "failures_unclassified": 0,
    "failures_to_doctor": 0,
    "detection_rate": None,
    "failures_by_pattern": {},
    "tokens_spent": tokens(0, 0, 0, 0),
    "tokens_by_role": {},
    "tokens_avoided": 0,
    "tokens_per_run": None,
    "cost_usd": 0.0,
    "cost_usd_by_role": {},
    "cost_usd_per_run": None,
    "unpriced_calls": 0,
    "cache_hit_rate": None,
    "attempts_per_run": None,
    "doctor_calls_per_run": None,
    "mean_phase_s": None,
    "mean_phase_s_by_kind": {},
}


# ---------------------------------------------------------------- compute_stats
def test_all_runs_every_figure(db: sqlite3.Connection) -> None:
    assert compute_stats(db, since_ts=None, by_arm=False) == {"since_ts": None, **ALL}


def test_by_arm_side_by_side(db: sqlite3.Connection) -> None:
    assert compute_stats(db, since_ts=None, by_arm=True) == {
        "since_ts": None, "arms": {"hardened": HARDENED, "baseline": BASELINE}}


def test_since_keeps_runs_created_from_then(db: sqlite3.Connection) -> None:
    assert compute_stats(db, since_ts=T0 + 150, by_arm=False) == {"since_ts": T0 + 150, **SINCE_150}


def test_since_by_arm_adds_up(db: sqlite3.Connection) -> None:
    got = compute_stats(db, since_ts=T0 + 150, by_arm=True)["arms"]
    assert got["hardened"]["runs_total"] + got["baseline"]["runs_total"] == 4
    assert got["hardened"]["failures_by_pattern"] == {"none": 1, "test_failure": 2}
    assert got["baseline"]["failures_total"] == 0
    assert got["baseline"]["detection_rate"] is None  # B2, B3 never failed an attempt
    assert got["baseline"]["success_rate"] == 1 / 2


def test_since_after_everything_is_empty(db: sqlite3.Connection) -> None:
    assert compute_stats(db, since_ts=T0 + 10_000, by_arm=False) == {"since_ts": T0 + 10_000, **EMPTY}


def test_empty_database_has_no_rates(empty_db: sqlite3.Connection) -> None:
    assert compute_stats(empty_db, since_ts=None, by_arm=False) == {"since_ts": None, **EMPTY}
    assert compute_stats(empty_db, since_ts=None, by_arm=True) == {
        "since_ts": None, "arms": {"hardened": EMPTY, "baseline": EMPTY}}


def test_unknown_arm_gets_its_own_column(db: sqlite3.Connection) -> None:
    History(db).run("canary", 700, [("fix", "build")])
    arms = compute_stats(db, since_ts=None, by_arm=True)["arms"]
    assert list(arms) == ["hardened", "baseline", "canary"]
    assert arms["canary"]["runs_by_state"]["queued"] == 1
    assert arms["hardened"] == HARDENED


def test_runs_in_flight_stay_out_of_per_run_means(db: sqlite3.Connection) -> None:
    """An interrupted run's failures and tokens count; its attempts, Doctor calls and
    tokens do not enter the per-run means, and its unfinished or skipped phases have no time."""
    h = History(db)
    r = h.run("hardened", 600, [("fix", "build"), ("docs", "build")])
    h.state(r, "running", 610)
    h.phase(r, 0, "running", 610)
    h.attempt(r, 0, "fix", 611, failure=None, doctor=True)
    h.llm(r, "doctor", {"input": 900, "output": 99}, 612)
    h.attempt(r, 0, "fix", 620)
    h.phase(r, 1, "skipped", 621)  # ended_at without started_at
    h.state(r, "interrupted", 630)
    got = compute_stats(db, since_ts=None, by_arm=False)
    assert got["runs_total"] == 7
    assert got["runs_by_state"]["interrupted"] == 1
    assert got["runs_ended"] == 5
    assert got["success_rate"] == 3 / 5
    assert got["failures_total"] == 7
    assert got["failures_to_doctor"] == 3
    assert got["tokens_spent"]["total"] == 8150 + 999
    assert got["tokens_per_run"] == 8150 / 5
    assert got["attempts_per_run"] == 11 / 5
    assert got["doctor_calls_per_run"] == 2 / 5
    assert got["mean_phase_s"] == 185 / 6
    snap = metrics_snapshot(db, queue_depth=0, memory_degraded=False, actor_restarts={},
                            control_connections_total=0, control_connections_active=0)
    assert snap.phase_attempts_total == 13
    assert snap.doctor_calls_total == 3
    assert snap.failures_by_pattern["none"] == 3


def test_stats_are_json_ready(db: sqlite3.Connection) -> None:
    data = compute_stats(db, since_ts=None, by_arm=True)
    assert json.loads(json.dumps(data)) == data


def test_plain_tuple_rows_work_too(tmp_path: Path) -> None:
    """The store sets ``row_factory = sqlite3.Row``; a bare connection gives the same figures."""
    path = tmp_path / "runs.db"
    build_history(open_db(path))
    bare = sqlite3.connect(path)
    try:
        assert compute_stats(bare, since_ts=None, by_arm=False) == {"since_ts": None, **ALL}
    finally:
        bare.close()


# ---------------------------------------------------------------- metrics
def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_token_kinds_match_metrics() -> None:
    assert TOKEN_KINDS == METRIC_TOKEN_KINDS


def test_metrics_snapshot_rendered_and_parsed(db: sqlite3.Connection) -> None:
    snap = metrics_snapshot(db, queue_depth=1, memory_degraded=True,
                            actor_restarts={"memory": 2, "classifier": 0},
                            control_connections_total=9, control_connections_active=1,
                            version="0.1.0")
    got = samples(render_metrics(snap))
    want = {
        ("autopack_runs", (("state", "queued"),)): 1,
        ("autopack_runs", (("state", "running"),)): 0,
        ("autopack_runs", (("state", "succeeded"),)): 3,
        ("autopack_runs", (("state", "failed"),)): 1,
        ("autopack_runs", (("state", "cancelled"),)): 1,
        ("autopack_runs", (("state", "interrupted"),)): 0,
        ("autopack_queue_depth", ()): 1,
        ("autopack_phase_attempts_total", ()): 11,
        ("autopack_failures_total", (("pattern", "none"),)): 2,
        ("autopack_failures_total", (("pattern", "python_missing_dep"),)): 2,
        ("autopack_failures_total", (("pattern", "test_failure"),)): 2,
        ("autopack_doctor_calls_total", ()): 2,
        ("autopack_tokens_spent_total", (("kind", "input"),)): 6500,
        ("autopack_tokens_spent_total", (("kind", "output"),)): 1100,
        ("autopack_tokens_spent_total", (("kind", "cache_creation"),)): 50,
        ("autopack_tokens_spent_total", (("kind", "cache_read"),)): 500,
        ("autopack_tokens_avoided_total", ()): 8000,
        ("autopack_memory_degraded", ()): 1,
        ("autopack_actor_restarts_total", (("actor", "classifier"),)): 0,
        ("autopack_actor_restarts_total", (("actor", "memory"),)): 2,
        ("autopack_control_connections_total", ()): 9,
        ("autopack_control_connections_active", ()): 1,
        # the robustness series (issue 13): zero in a snapshot built from the database alone
        ("autopack_store_write_failures_total", ()): 0,
        ("autopack_run_actor_crashes_total", ()): 0,
        ("autopack_control_rejected_busy_total", ()): 0,
        ("autopack_control_timeouts_total", ()): 0,
        ("autopack_control_invalid_requests_total", ()): 0,
        ("autopack_control_replies_too_large_total", ()): 0,
        ("autopack_control_buffered_bytes", ()): 0,
        ("autopack_build_info", (("version", "0.1.0"),)): 1,
    }
    assert got == want


def test_metrics_snapshot_of_empty_database(empty_db: sqlite3.Connection) -> None:
    snap = metrics_snapshot(empty_db, queue_depth=0, memory_degraded=False, actor_restarts={},
                            control_connections_total=0, control_connections_active=0)
    assert snap.runs_by_state == {}
    assert snap.phase_attempts_total == 0
    assert snap.failures_by_pattern == {}
    assert snap.tokens_spent_total == dict.fromkeys(TOKEN_KINDS, 0)
    assert snap.tokens_avoided_total == 0
    assert snap.memory_degraded == 0
    got = samples(render_metrics(snap))
    assert got[("autopack_runs", (("state", "succeeded"),))] == 0
    assert not any(name == "autopack_failures_total" for name, _ in got)


LIVE: dict[str, Any] = {"queue_depth": 0, "memory_degraded": False, "actor_restarts": {},
                        "control_connections_total": 0, "control_connections_active": 0}


def test_metrics_cache_reads_only_new_rows_and_agrees(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "runs.db")
    cache = MetricsCache()
    assert metrics_snapshot(conn, cache=cache, **LIVE) == metrics_snapshot(conn, **LIVE)
    ids = build_history(conn)
    first = metrics_snapshot(conn, cache=cache, **LIVE)
    assert first == metrics_snapshot(conn, **LIVE)
    assert first.failures_by_pattern == {"none": 2, "python_missing_dep": 2, "test_failure": 2}
    assert first.tokens_avoided_total == 8000
    assert cache.last_event_id == db_max(conn, "events")
    assert cache.last_llm_id == db_max(conn, "llm_calls")
    # more history after the first scrape: only the new rows are added
    h = History(conn)
    h.attempt(ids["B3"], 0, "fix", 600, failure="ce_gcc_types", avoided=1500)
    h.llm(ids["B3"], "builder", {"input": 10, "output": 1}, 601)
    second = metrics_snapshot(conn, cache=cache, **LIVE)
    assert second == metrics_snapshot(conn, **LIVE)
    assert second.failures_by_pattern["ce_gcc_types"] == 1
    assert second.tokens_avoided_total == 9500
    assert second.tokens_spent_total["input"] == 6510
    # a pruned run leaves the counters monotonic (a fresh scan would go down)
    conn.execute("DELETE FROM runs WHERE id = ?", (ids["H1"],))
    third = metrics_snapshot(conn, cache=cache, **LIVE)
    assert third.tokens_avoided_total == 9500
    assert metrics_snapshot(conn, **LIVE).tokens_avoided_total == 9500 - 6000
    conn.close()


def db_max(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT MAX(id) FROM {table}").fetchone()[0])


def test_metrics_queries_use_the_kind_index(db: sqlite3.Connection) -> None:
    plan = " ".join(str(tuple(r)) for r in db.execute(
        "EXPLAIN QUERY PLAN SELECT json_extract(payload, '$.pattern'), COUNT(*) FROM events"
        " WHERE kind = 'classified' AND id > 0 AND id <= 1000 GROUP BY 1"))
    assert "events_by_kind" in plan


# ---------------------------------------------------------------- parse_duration
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("90s", 90.0, id="seconds"),
        pytest.param("30m", 1800.0, id="minutes"),
        pytest.param("24h", 86400.0, id="hours"),
        pytest.param("7d", 604800.0, id="days"),
        pytest.param("1w", 604800.0, id="week"),
        pytest.param("1.5h", 5400.0, id="fraction"),
        pytest.param("1h30m", 5400.0, id="compound"),
        pytest.param(" 2D ", 172800.0, id="case-and-spaces"),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "invalid duration ''", id="empty"),
        pytest.param("90", "use a number and a unit", id="no-unit"),
        pytest.param("3x", "use a number and a unit", id="bad-unit"),
        pytest.param("h", "use a number and a unit", id="no-number"),
        pytest.param("-5m", "use a number and a unit", id="negative"),
        pytest.param("5 m", "use a number and a unit", id="inner-space"),
        pytest.param("0s", "longer than zero", id="zero"),
    ],
)
def test_parse_duration_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


# ---------------------------------------------------------------- human formatting
def table(text: str) -> tuple[str, list[list[str]]]:
    """Title and rows of ``format_stats`` output, each row split into label and value cells."""
    title, *lines = text.splitlines()
    return title, [re.split(r"\s{2,}", line.strip()) for line in lines]


def test_format_flat(db: sqlite3.Connection) -> None:
    title, rows = table(format_stats(compute_stats(db, since_ts=None, by_arm=False)))
    assert title == "autopack stats, all runs"
    cells = {r[0]: r[1:] for r in rows}
    assert cells["runs"] == ["6"]
    assert cells["success rate"] == ["60.0%"]
    assert cells["detection rate"] == ["66.7%"]
    assert cells["sent to Doctor"] == ["2"]
    assert cells["tokens spent"] == ["8,150"]
    assert cells["tokens avoided"] == ["8,000"]
    assert cells["tokens / run"] == ["1,630.00"]
    assert cells["cost"] == ["$0.0078"]
    assert cells["builder"] == ["$0.0061"]
    assert cells["doctor"] == ["$0.0017"]
    assert cells["cost / run"] == ["$0.0016"]
    assert cells["cache hit rate"] == ["7.1%"]
    assert cells["attempts / run"] == ["2.20"]
    assert cells["Doctor calls / run"] == ["0.40"]
    assert cells["mean phase time"] == ["30.8 s"]
    assert cells["failures by pattern"] == []
    assert cells["python_missing_dep"] == ["2"]


def test_format_by_arm_columns(db: sqlite3.Connection) -> None:
    text = format_stats(compute_stats(db, since_ts=None, by_arm=True), since="7d")
    title, rows = table(text)
    assert title == "autopack stats, runs of the last 7d"
    assert rows[0] == ["hardened", "baseline"]
    cells = {r[0]: r[1:] for r in rows[1:]}
    assert cells["success rate"] == ["50.0%", "66.7%"]
    assert cells["detection rate"] == ["80.0%", "0.0%"]
    assert cells["sent to Doctor"] == ["1", "1"]
    assert cells["tokens spent"] == ["4,550", "3,600"]
    assert cells["tokens avoided"] == ["8,000", "0"]
    assert cells["cost"] == ["$0.0048", "$0.0030"]
    assert cells["cache hit rate"] == ["10.1%", "3.2%"]
    assert cells["attempts / run"] == ["3.50", "1.33"]
    assert cells["Doctor calls / run"] == ["0.50", "0.33"]
    assert cells["mean phase time"] == ["40.0 s", "21.7 s"]
    assert cells["test_failure"] == ["2", "0"]
    assert cells["none"] == ["1", "1"]
    # values are right-aligned: every row with values ends in the same column
    ends = {len(line) for line in text.splitlines()[1:] if not line.startswith("failures by")}
    assert len(ends) == 1


def test_format_undefined_rates_show_dash() -> None:
    title, rows = table(format_stats({"since_ts": T0, **EMPTY}))
    assert title.startswith("autopack stats, runs since ")
    cells = {r[0]: r[1:] for r in rows}
    assert cells["success rate"] == ["-"]
    assert cells["detection rate"] == ["-"]
    assert cells["attempts / run"] == ["-"]
    assert cells["mean phase time"] == ["-"]
    assert cells["runs"] == ["0"]
    assert "failures by pattern" not in cells


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        pytest.param(30.84, "30.8 s", id="seconds"),
        pytest.param(600.0, "10.0 min", id="minutes"),
        pytest.param(9000.0, "2.5 h", id="hours"),
    ],
)
def test_format_phase_time_units(seconds: float, shown: str) -> None:
    text = format_stats({**EMPTY, "mean_phase_s": seconds})
    assert {r[0]: r[1:] for r in table(text)[1]}["mean phase time"] == [shown]


# ---------------------------------------------------------------- the command, over a real socket
class StatsServer:
    """A loopback unix-socket peer speaking the control protocol: Hello, then GetStats.

    Answers with ``compute_stats`` on its own connection to the database file, or
    with ``error`` when given. Records the requests it got.
    """

    def __init__(self, path: str, db_path: Path | None, error: Error | None = None) -> None:
        self.path, self.db_path, self.error = path, db_path, error
        self.requests: list[Any] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            buf = FrameBuffer()
            while True:
                try:
                    req = decode_request(recv_frame_blocking(conn, buf))
                except (EOFError, OSError):
                    return
                self.requests.append(req)
                if isinstance(req, Hello):
                    conn.sendall(encode_frame(Welcome(daemon="test", pid=os.getpid())))
                elif self.error is not None:
                    conn.sendall(encode_frame(self.error))
                elif isinstance(req, GetStats):
                    assert self.db_path is not None
                    db = sqlite3.connect(self.db_path)
                    since = T0 + 150 if req.since_s is not None else None  # fixed "now"
                    data = compute_stats(db, since_ts=since, by_arm=req.by_arm)
                    db.close()
                    conn.sendall(encode_frame(Stats(data=data)))

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.fixture
def sock_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="aps", dir="/tmp") as d:  # short: sun_path is 108 bytes
        yield d


def run_ctl(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="autopackctl")
    parser.add_argument("--socket")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert args.func is cmd_stats
    return int(args.func(args))


def test_cmd_json_over_socket(tmp_path: Path, sock_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    db_path = tmp_path / "runs.db"
    build_history(open_db(db_path))
    server = StatsServer(os.path.join(sock_dir, "s"), db_path)
    try:
        code = run_ctl(["--socket", server.path, "stats", "--since", "24h", "--by-arm", "--json"])
    finally:
        server.close()
    assert code == 0
    assert server.requests[1] == GetStats(since_s=86400.0, by_arm=True)
    data = json.loads(capsys.readouterr().out)
    assert data["arms"]["hardened"]["failures_total"] == 3
    assert data["arms"]["baseline"]["success_rate"] == 1 / 2


def test_cmd_table_over_socket(tmp_path: Path, sock_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    db_path = tmp_path / "runs.db"
    build_history(open_db(db_path))
    server = StatsServer(os.path.join(sock_dir, "s"), db_path)
    try:
        code = run_ctl(["--socket", server.path, "stats"])
    finally:
        server.close()
    assert code == 0
    assert server.requests[1] == GetStats(since_s=None, by_arm=False)
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "autopack stats, all runs"
    assert "60.0%" in out


def test_cmd_remote_error_is_one_line(sock_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    server = StatsServer(os.path.join(sock_dir, "s"), None,
                         Error(code="not_supported", message="stats are not available"))
    try:
        code = run_ctl(["--socket", server.path, "stats"])
    finally:
        server.close()
    err = capsys.readouterr().err
    assert code == 2
    assert err == "autopackctl: stats are not available [not_supported]\n"


def test_cmd_no_daemon_is_one_line(sock_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_ctl(["--socket", os.path.join(sock_dir, "missing"), "stats"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "not running" in err


def test_cmd_bad_since_is_one_line(sock_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_ctl(["--socket", os.path.join(sock_dir, "missing"), "stats", "--since", "3x"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("autopackctl: --since: invalid duration '3x'")
    assert err.count("\n") == 1


def test_autopackctl_stats_entry_point(sock_dir: str) -> None:
    """Through the installed ``autopackctl`` (the lead's main loads this module)."""
    exe = Path(sys.executable).parent / "autopackctl"
    proc = subprocess.run([str(exe), "--socket", os.path.join(sock_dir, "missing"), "stats"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "not running" in proc.stderr


def test_cli_does_not_import_prometheus_or_trio() -> None:
    code = ("import sys, autopack.daemon.ctl._stats; "
            "print(sorted(m for m in ('trio', 'anthropic', 'prometheus_client') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert out.strip() == "[]"

"""Dashboard cores without a daemon: access decisions, list paging on a real SQLite file,
the timeline built from a run's events, rendering escapes what runs wrote."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest
from autopack.daemon import _queries as q
from autopack.daemon._schema import migrate
from autopack.daemon.web import _queries as wq
from autopack.daemon.web._auth import Gate, TokenError, is_loopback, load_token
from autopack.daemon.web._render_detail import detail_body
from autopack.daemon.web._render_list import cost_cell, is_wedged, run_row
from autopack.daemon.web._timeline import build_timeline, cost_usd
from autopack.protocol import parse_spec_text

TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.mark.parametrize(("host", "loopback"), [
    pytest.param("127.0.0.1", True, id="v4"),
    pytest.param("127.0.0.2", True, id="v4-net"),
    pytest.param("::1", True, id="v6"),
    pytest.param("[::1]", True, id="v6-brackets"),
    pytest.param("localhost", True, id="name"),
    pytest.param("0.0.0.0", False, id="any-v4"),
    pytest.param("::", False, id="any-v6"),
    pytest.param("192.168.1.5", False, id="lan"),
    pytest.param("dash.example", False, id="other-name"),
])
def test_loopback_decides_whether_a_token_is_required(host, loopback):
    assert is_loopback(host) is loopback
    assert Gate.for_listener(host, "auto", None).required is (not loopback)
    assert Gate.for_listener(host, "token", TOKEN).required


def test_gate_accepts_bearer_and_session_cookie_only():
    gate = Gate.for_listener("0.0.0.0", "auto", TOKEN)
    assert not gate.allows("", None)
    assert not gate.allows("Bearer wrong", None)
    assert not gate.allows(f"Basic {TOKEN}", None)
    assert gate.allows(f"Bearer {TOKEN}", None)
    assert gate.allows("", gate.cookie_value())
    assert TOKEN not in gate.cookie_value()  # the cookie is not the token itself
    assert not gate.allows("", TOKEN)
    assert Gate.for_listener("0.0.0.0", "auto", None).misconfigured
    assert not Gate.for_listener("127.0.0.1", "auto", None).misconfigured


def test_token_file_and_credential(tmp_path: Path):
    f = tmp_path / "tok"
    f.write_text(TOKEN + "\n")
    assert load_token(str(f), env={}) == TOKEN
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "dashboard_token").write_text(TOKEN)
    assert load_token(None, env={"CREDENTIALS_DIRECTORY": str(creds)}) == TOKEN
    assert load_token(None, env={}) is None
    f.write_text("short")
    with pytest.raises(TokenError, match="shorter"):
        load_token(str(f), env={})
    with pytest.raises(TokenError, match="cannot read"):
        load_token(str(tmp_path / "missing"), env={})


SPEC = parse_spec_text('{"goal": "g", "phases": [{"id": "a", "goal": "a", "kind": "command",'
                       ' "checks": ["true"]}, {"id": "b", "goal": "b", "kind": "command",'
                       ' "checks": ["true"]}]}', fmt="json")


@pytest.fixture
def db(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA synchronous=OFF")  # a test database: speed over durability
    migrate(conn)
    return conn


def seed(conn: sqlite3.Connection, n: int) -> list[str]:
    counter = itertools.count()
    ids = []
    for i in range(n):
        spec = parse_spec_text(
            f'{{"goal": "goal number {i} {"needle" if i % 7 == 0 else ""}", "phases": [{{"id": "a",'
            ' "goal": "a", "kind": "command", "checks": ["true"]}]}', fmt="json")
        rid = q.insert_run(conn, lambda: f"run-{next(counter):05d}", spec,
                           f"/repos/r{i % 3}", "hardened", 1000.0 + i)
        if i % 4 == 0:
            q.set_run_state(conn, rid, "running", None, 1000.5 + i)
            q.set_run_state(conn, rid, "failed", "x", 1001.0 + i)
        ids.append(rid)
    return ids


def test_keyset_paging_returns_every_run_once_newest_first(db):
    ids = seed(db, 230)
    seen: list[str] = []
    f = wq.ListFilter(limit=50)
    pages = 0
    while True:
        page = wq.list_page(db, f)
        pages += 1
        assert page["total"] == 230
        seen += [r["id"] for r in page["rows"]]
        if page["older"] is None:
            break
        f = wq.ListFilter(limit=50, before=page["older"])
    assert pages == 5
    assert seen == list(reversed(ids))
    # and back: the page before the second one is the first one
    second = wq.list_page(db, wq.ListFilter(limit=50, before=wq.list_page(
        db, wq.ListFilter(limit=50))["older"]))
    back = wq.list_page(db, wq.ListFilter(limit=50, after=second["newer"]))
    assert [r["id"] for r in back["rows"]] == list(reversed(ids))[:50]
    assert back["newer"] is None


def test_filters_state_repo_and_text(db):
    seed(db, 100)
    failed = wq.list_page(db, wq.ListFilter(state="failed", limit=200))
    assert failed["total"] == 25
    assert {r["state"] for r in failed["rows"]} == {"failed"}
    repo = wq.list_page(db, wq.ListFilter(repo="/repos/r1", limit=200))
    assert {r["repo"] for r in repo["rows"]} == {"/repos/r1"}
    assert repo["total"] == 33
    text = wq.list_page(db, wq.ListFilter(text="needle", limit=200))
    assert text["total"] == 15
    assert all("needle" in r["goal"] for r in text["rows"])
    by_id = wq.list_page(db, wq.ListFilter(text="run-0004", limit=200))
    assert [r["id"] for r in by_id["rows"]] == [f"run-0004{d}" for d in range(9, -1, -1)]
    like_chars = wq.list_page(db, wq.ListFilter(text="%", limit=200))
    assert like_chars["total"] == 0  # LIKE wildcards are searched for literally
    rows = wq.rows_for(db, ["run-00000", "run-00001"], wq.ListFilter(state="failed"))
    assert [r["id"] for r in rows["rows"]] == ["run-00000"]
    assert rows["dropped"] == ["run-00001"]


def test_figures_of_a_run(db):
    (rid,) = seed(db, 1)
    idx = 0
    q.set_phase_state(db, rid, idx, "running", 1000.6)
    q.begin_attempt(db, rid, idx, 1000.7, {})
    q.record_llm_call(db, rid, "a", 1, "builder", "m1", {"input": 1000, "output": 200,
                                                         "cache_creation": 50, "cache_read": 10},
                      1000.8, cost_pusd=6_000_000_000)
    q.record_llm_call(db, rid, "a", 1, "doctor", "unpriced-model", {"input": 5}, 1000.85)
    q.add_event(db, rid, "a", 1, "classified", 1000.88, {"pattern": "x", "doctor_avoidable": 9})
    q.add_event(db, rid, "a", 1, "doctor_avoided", 1000.9, {"pattern": "x", "tokens_avoided": 777})
    (row,) = wq.list_page(db, wq.ListFilter())["rows"]
    assert row["attempts"] == 1
    assert row["phases_total"] == 1
    assert row["tokens"] == {"input": 1005, "output": 200, "cache_creation": 50, "cache_read": 10}
    assert row["avoided"] == 777  # credited Doctor calls only, not the avoidable ones
    assert row["last_event_ts"] == 1000.9
    assert row["cost_pusd"] == 6_000_000_000
    assert cost_usd(row["cost_pusd"]) == pytest.approx(0.006)
    assert row["unpriced_calls"] == 1
    cell = cost_cell(row)
    assert "$0.0060*" in cell
    assert "1 call of a model without a price" in cell
    assert is_wedged({**row, "state": "running"}, now=1000.9 + 61, wedged_after_s=60)
    assert not is_wedged({**row, "state": "running"}, now=1000.9 + 59, wedged_after_s=60)
    assert not is_wedged({**row, "state": "queued"}, now=1e9, wedged_after_s=60)


def _ev(i: int, kind: str, ts: float, phase: str | None = "p", attempt: int | None = 1,
        **payload: object) -> dict:
    return {"id": i, "phase_id": phase, "attempt": attempt, "kind": kind, "ts": ts,
            "payload": payload}


def test_timeline_attempts_failures_and_hostile_text_escaped():
    evil = "<script>alert(1)</script>"
    run = {
        "id": "r1", "state": "succeeded", "created_at": 100.0, "started_at": 100.0,
        "ended_at": 110.0, "goal": evil, "reason": None, "repo": "/r", "branch": "b",
        "base": "HEAD", "base_commit": None, "final_commit": None, "arm": "hardened",
        "phases_total": 1, "phases_done": 1, "attempts": 2, "current_phase": None,
        "current_idx": None, "tokens": dict.fromkeys(("input", "output", "cache_creation",
                                                       "cache_read"), 0),
        "cost_pusd": 0, "unpriced_calls": 0, "avoided": 5, "last_event_ts": 110.0, "last_event_id": 9,
        "phases": [{"idx": 0, "id": "p", "kind": "build", "state": "succeeded", "attempts": 2,
                    "doctor_calls": 1, "reason": None, "commit_sha": "abc", "started_at": 100.0,
                    "ended_at": 110.0}],
        "events": [
            _ev(1, "submitted", 100.0, phase=None, attempt=None),
            _ev(2, "attempt_started", 101.0),
            _ev(3, "builder_started", 101.0, context_bytes=812),
            _ev(4, "builder_diff", 102.0, diff="+x = 1\n", files=["a.py"], added=1, removed=0),
            _ev(5, "check_finished", 103.0, command="pytest", exit_code=1, excerpt=evil),
            _ev(6, "classified", 103.1, pattern=None, evidence=[evil], decision="doctor",
                command="pytest", exit_code=1),
            _ev(7, "doctor_called", 104.0, decision="retry_with_hint", rationale="because",
                hint="fix it", context_bytes=300),
            _ev(8, "attempt_started", 105.0, attempt=2),
            _ev(8, "check_finished", 106.0, attempt=2, command="pytest", exit_code=0),
            _ev(9, "phase_succeeded", 110.0, attempt=2),
        ],
        "events_total": 9, "llm_calls": [],
    }
    tl = build_timeline(run, now=200.0)
    assert [(a.n, a.outcome) for a in tl.attempts] == [(1, "failed"), (2, "succeeded")]
    first = tl.attempts[0]
    assert first.context_bytes == {"builder": 812, "doctor": 300}
    assert first.failures[0].doctor[0]["decision"] == "retry_with_hint"
    assert tl.position(first, 200.0) == (10.0, 40.0)
    html = detail_body(run, now=200.0, wedged_after_s=60)
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "retry_with_hint" in html
    assert "812 bytes" in html
    assert "unclassified" in html
    row = run_row(run | {"seq": 1}, now=200.0, wedged_after_s=60)
    assert "<script>" not in row


def test_public_surface():
    from autopack.daemon import web

    assert web.__all__ == ["SECURITY_HEADERS", "Dashboard", "HttpRequest", "HttpResponse",
                           "event_stream"]

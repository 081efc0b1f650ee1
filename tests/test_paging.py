"""Paged replies: no reply passes the frame limit; paging returns every run exactly once
while runs are being added; ``wait --all`` asks only for runs not ended; ``logs`` pages."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
from autopack.daemon._paging import FRAME_MARGIN, fit_event, run_page
from autopack.protocol import Follow, ListRuns, LogsEnd, RunStatus, Submit, parse_spec_text

from .conftest import wait_state

SMALL_FRAME = 16 * 1024


def _spec(check: str, goal: str = "paged") -> Any:
    return parse_spec_text(
        f'goal = "{goal}"\n[[phases]]\nid = "p"\ngoal = "g"\nkind = "command"\n'
        f'checks = ["{check}"]\n', fmt="toml")


def _status(i: int, goal_bytes: int = 100) -> tuple[int, RunStatus]:
    return 1000 - i, RunStatus(run_id=f"run-{i}", state="queued", goal="g" * goal_bytes)


def test_a_page_stops_before_the_frame_limit_and_says_where_to_go_on() -> None:
    items = [_status(i, goal_bytes=1000) for i in range(50)]
    page = run_page(items, limit=49, max_frame=SMALL_FRAME)
    assert 0 < len(page.runs) < 49
    assert len(msgspec.msgpack.encode(page)) <= SMALL_FRAME - FRAME_MARGIN + 64
    assert page.next_cursor == items[len(page.runs) - 1][0]


def test_a_page_at_the_limit_has_a_cursor_and_the_last_page_none() -> None:
    items = [_status(i) for i in range(11)]
    assert run_page(items, limit=10, max_frame=1 << 20).next_cursor == items[9][0]
    last = run_page(items[:7], limit=10, max_frame=1 << 20)
    assert len(last.runs) == 7
    assert last.next_cursor is None


def test_an_event_too_big_for_a_frame_is_sent_as_a_note() -> None:
    ev = {"id": 3, "run_id": "r", "phase_id": None, "attempt": None, "kind": "check_done",
          "ts": 1.0, "payload": {"excerpt": "x" * 50_000}}
    msg = fit_event(ev, SMALL_FRAME)
    assert msg.payload["truncated"] is True
    assert msg.payload["payload_bytes"] > SMALL_FRAME
    assert fit_event({**ev, "payload": {"excerpt": "ok"}}, SMALL_FRAME).payload == {"excerpt": "ok"}


def test_paging_returns_every_run_exactly_once_while_runs_are_added(
        daemon_factory: Any, repo: Path) -> None:
    d = daemon_factory(config={"max_concurrent_runs": 1, "max_frame_bytes": SMALL_FRAME})
    hold = _spec("sleep 600", goal="holds the only slot")
    queued = _spec("true", goal="q" * 900)  # ~1 KB per status: a frame holds ~15
    with d.client() as c:
        holder = c.request(Submit(spec=hold, repo=str(repo))).run_id
        before = [c.request(Submit(spec=queued, repo=str(repo))).run_id for _ in range(120)]
        # one request for them all cannot be answered in one frame: the daemon pages
        first = c.request(ListRuns(limit=1000))
        assert 0 < len(first.runs) < 121
        assert first.next_cursor is not None
    stop = threading.Event()
    added: list[str] = []

    def keep_submitting() -> None:
        with d.client() as c2:
            while not stop.is_set():
                added.append(c2.request(Submit(spec=queued, repo=str(repo))).run_id)

    t = threading.Thread(target=keep_submitting)
    t.start()
    try:
        with d.client() as c:
            seen = [st.run_id for st in c.runs(page=7)]
    finally:
        stop.set()
        t.join(30)
    assert added, "runs were being submitted while paging"
    assert len(seen) == len(set(seen))  # none twice
    assert set(before + [holder]) <= set(seen)  # every run that existed, once
    assert set(seen) <= set(before + [holder] + added)
    # the CLI pages too: every run, in a daemon whose frames are 16 KiB
    res = d.ctl("list", "--limit", "0", "--json")
    assert res.returncode == 0, res.stderr
    listed = [st["run_id"] for st in json.loads(res.stdout)["runs"]]  # one document
    assert len(listed) == len(set(listed)) == 1 + len(before) + len(added)
    d.stop()


def test_wait_all_asks_only_for_runs_not_ended(daemon_factory: Any, repo: Path) -> None:
    d = daemon_factory(config={"max_concurrent_runs": 4, "max_frame_bytes": SMALL_FRAME})
    with d.client() as c:
        ended = [c.request(Submit(spec=_spec("true", goal="e" * 900), repo=str(repo))).run_id
                 for _ in range(40)]
    for run_id in ended:
        wait_state(d, run_id)
    with d.client() as c:
        live = c.request(Submit(spec=_spec("sleep 1"), repo=str(repo))).run_id
        page = c.request(ListRuns(states=["queued", "running", "interrupted"], limit=100))
        assert [st.run_id for st in page.runs] == [live]
        assert page.next_cursor is None
    res = d.ctl("wait", "--all", "--json", timeout=120)
    assert res.returncode == 0, res.stderr
    waited = [st["run_id"] for st in json.loads(res.stdout)["runs"]]
    assert waited == [live]


def test_logs_page_by_event_id(daemon_factory: Any, repo: Path) -> None:
    d = daemon_factory()
    with d.client() as c:
        run_id = c.request(Submit(spec=_spec("true"), repo=str(repo))).run_id
    wait_state(d, run_id)
    deadline = time.monotonic() + 30
    while True:  # the report is written (and its event recorded) just after the run ends
        ids: list[int] = []
        kinds: list[str] = []
        with d.client() as c:
            for msg in c.stream(Follow(run_id=run_id)):
                if isinstance(msg, LogsEnd):
                    assert msg.more is False
                    break
                ids.append(msg.id)
                kinds.append(msg.kind)
        if "report_written" in kinds or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(ids) >= 4
    paged: list[int] = []
    after = 0
    while True:
        with d.client() as c:
            for msg in c.stream(Follow(run_id=run_id, after=after, limit=3)):
                if isinstance(msg, LogsEnd):
                    break
                paged.append(msg.id)
        assert msg.last_id == (paged[-1] if paged else 0)
        after = msg.last_id
        if not msg.more:
            break
    assert paged == ids

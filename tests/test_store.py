"""The store's group commit, reader connection and maintained counters.

- counters (schema v3, kept by triggers) equal a full ``COUNT(*)`` after random
  state changes, restarts and a migration from v2 (seeded random, real SQLite file);
- the reader connection answers while the writer is busy with a batch;
- submits acknowledged during group-committed batches survive ``kill -9`` of the
  daemon (real daemon, real socket, several concurrent clients, repeated kills).
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from autopack.actors._states import check_phase_transition, check_run_transition
from autopack.daemon import _queries as q
from autopack.daemon._client import DaemonUnavailable
from autopack.daemon._records import new_run_id
from autopack.daemon._schema import MIGRATIONS, SCHEMA_VERSION, counted, migrate, recount
from autopack.daemon._store import Store
from autopack.protocol import RemoteError, Submit, parse_spec_text

from .conftest import DaemonProc

RUN_STATES = ["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
PHASE_STATES = ["queued", "running", "succeeded", "failed", "skipped", "cancelled"]
SPEC = parse_spec_text(
    'goal = "counted"\n'
    '[[phases]]\nid = "a"\ngoal = "first"\nkind = "command"\nchecks = ["true"]\n'
    '[[phases]]\nid = "b"\ngoal = "second"\nkind = "command"\nchecks = ["true"]\n', fmt="toml")


def _allowed(check: Any, src: str, dst: str) -> bool:
    try:
        check(src, dst)
    except Exception:
        return False
    return True


def _random_change(conn: sqlite3.Connection, rng: random.Random) -> None:
    """One random legal write: a submit, a run or phase transition, an attempt, a doctor call,
    or a delete (retention tools may delete runs; the counters must follow)."""
    ids = [r[0] for r in conn.execute("SELECT id FROM runs")]
    roll = rng.random()
    if not ids or roll < 0.25:
        q.insert_run(conn, new_run_id, SPEC, "/repo", "hardened", time.time())
        return
    run_id = rng.choice(ids)
    if roll < 0.55:
        (state,) = conn.execute("SELECT state FROM runs WHERE id = ?", (run_id,)).fetchone()
        targets = [s for s in RUN_STATES if _allowed(check_run_transition, state, s)]
        if targets:
            q.set_run_state(conn, run_id, rng.choice(targets), None, time.time())
    elif roll < 0.75:
        idx = rng.randrange(2)
        (state,) = conn.execute("SELECT state FROM phases WHERE run_id = ? AND idx = ?",
                                (run_id, idx)).fetchone()
        targets = [s for s in PHASE_STATES if _allowed(check_phase_transition, state, s)]
        if targets:
            q.set_phase_state(conn, run_id, idx, rng.choice(targets), time.time())
    elif roll < 0.88:
        q.begin_attempt(conn, run_id, rng.randrange(2), time.time())
    elif roll < 0.96:
        q.add_doctor_call(conn, run_id, rng.randrange(2))
    else:
        conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))


def _check(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        full = recount(conn)
        assert counted(conn) == full
        return full
    finally:
        conn.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_counters_equal_a_full_count_after_random_changes_and_restarts(
        tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "autopack.db"
    for _restart in range(4):
        store = Store(str(path))
        await store.open()
        for _ in range(8):  # concurrent jobs: group-committed batches of several changes
            async with trio.open_nursery() as nursery:
                for _ in range(rng.randrange(1, 12)):
                    nursery.start_soon(store.call, _random_change, random.Random(rng.random()))
            counts = await store.read(q.count_by_state)
            assert counts == {k[5:]: n for k, n in _check(path).items() if k.startswith("runs.")}
        await store.close()
    full = _check(path)
    assert sum(n for k, n in full.items() if k.startswith("runs.")) > 0


def test_migration_to_v3_rebuilds_the_counters_from_existing_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys=ON")
    for version, script in enumerate(MIGRATIONS[:2]):  # a v2 database, as released
        conn.executescript(script)
        conn.execute(f"PRAGMA user_version={version + 1}")
    rng = random.Random(7)
    for _ in range(300):
        conn.execute("BEGIN")
        _random_change(conn, rng)
        conn.execute("COMMIT")
    before = recount(conn)
    assert migrate(conn) == 2
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert counted(conn) == before
    for _ in range(300):  # and the triggers keep them right afterwards
        conn.execute("BEGIN")
        _random_change(conn, rng)
        conn.execute("COMMIT")
    assert counted(conn) == recount(conn)
    conn.close()


async def test_reads_answer_while_the_writer_is_held_in_a_batch(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "autopack.db"))
    await store.open()
    run_id = await store.call(q.insert_run, new_run_id, SPEC, "/repo", "hardened", time.time())
    release = threading.Event()
    entered = threading.Event()

    def slow_write(conn: sqlite3.Connection) -> None:
        q.set_run_state(conn, run_id, "running", None, time.time())
        entered.set()
        release.wait(30)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.call, slow_write)
        await trio.to_thread.run_sync(entered.wait, 30)
        # the writer is inside its transaction: the reader still answers, from the last commit
        run = await store.read(q.get_run, run_id)
        assert run["state"] == "queued"
        assert await store.read(q.count_by_state) == {"queued": 1}
        release.set()
    assert (await store.read(q.get_run, run_id))["state"] == "running"
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        await store.read(q.set_run_fields, run_id, reason="nope")
    await store.close()


def _submitter(d: DaemonProc, spec: Any, repo: Path, acked: list[str], stop: threading.Event) -> None:
    try:
        with d.client(timeout=10) as c:
            while not stop.is_set():
                reply = c.request(Submit(spec=spec, repo=str(repo)))
                acked.append(reply.run_id)  # acknowledged: must survive from here on
    except (OSError, RemoteError, DaemonUnavailable):  # the daemon was killed under us
        return


def test_acknowledged_submits_survive_kill9_mid_batch(daemon_factory: Any, repo: Path) -> None:
    spec = parse_spec_text(
        'goal = "durable"\n[[phases]]\nid = "p"\ngoal = "g"\nkind = "command"\n'
        'checks = ["true"]\n', fmt="toml")
    d = daemon_factory(config={"max_concurrent_runs": 2}, start=False)
    acked: list[str] = []
    for kill in range(4):
        d.start()
        stop = threading.Event()
        threads = [threading.Thread(target=_submitter, args=(d, spec, repo, acked, stop))
                   for _ in range(6)]
        for t in threads:
            t.start()
        before = len(acked)
        deadline = time.monotonic() + 30
        while len(acked) < before + 100 + 50 * kill and time.monotonic() < deadline:
            time.sleep(0.005)
        d.kill9()  # while six connections keep submitting: mid-batch
        stop.set()
        for t in threads:
            t.join(15)
        assert len(acked) > before
    d.start()  # reconcile: leftovers of the killed daemons are killed
    d.stop()
    db = sqlite3.connect(d.state_dir / "autopack.db")
    stored = {r[0] for r in db.execute("SELECT id FROM runs")}
    lost = [run_id for run_id in acked if run_id not in stored]
    assert lost == []
    assert counted(db) == recount(db)
    db.close()


async def test_posted_writes_commit_in_order_with_the_next_call(tmp_path: Path,
                                                                caplog: Any) -> None:
    store = Store(str(tmp_path / "autopack.db"))
    await store.open()
    run_id = await store.call(q.insert_run, new_run_id, SPEC, "/repo", "hardened", time.time())
    changed = store.changed_event()
    for i in range(50):  # a run's progress events: nobody waits for each
        store.post(q.add_event, run_id, None, None, f"progress{i}", time.time(), {"i": i})
    store.post(q.add_event, "no-such-run", None, None, "orphan", time.time(), {})  # fails (FK)
    q_state = await store.call(q.set_run_state, run_id, "running", None, time.time())
    assert q_state == "queued"
    kinds = [e["kind"] for e in await store.read(q.events_after, run_id, 0, 1000)]
    assert kinds == ["submitted", *[f"progress{i}" for i in range(50)], "run_running"]
    with trio.fail_after(10):
        await changed.wait()  # logs -f followers are woken by the commit
    assert "a posted write failed" in caplog.text
    await store.close()
    with sqlite3.connect(tmp_path / "autopack.db") as db:  # and it is on disk
        assert db.execute("SELECT COUNT(*) FROM events WHERE kind LIKE 'progress%'").fetchone() == (50,)


async def test_cached_reads_see_every_acknowledged_write(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "autopack.db"))
    await store.open()
    asked: list[int] = []

    def counts(conn: sqlite3.Connection) -> dict[str, int]:
        asked.append(1)
        return q.count_by_state(conn)

    assert await store.read_cached("counts", counts) == {}
    assert await store.read_cached("counts", counts) == {}
    assert len(asked) == 1  # nothing written in between: answered without a read
    run_id = await store.call(q.insert_run, new_run_id, SPEC, "/repo", "hardened", time.time())
    assert await store.read_cached("counts", counts) == {"queued": 1}
    store.post(q.add_event, run_id, None, None, "progress", time.time(), {})  # nobody waits
    await store.call(q.set_run_state, run_id, "running", None, time.time())
    assert await store.read_cached("counts", counts) == {"running": 1}
    assert len(asked) == 3
    async with trio.open_nursery() as nursery:  # writes racing the cached reads
        for _ in range(20):
            nursery.start_soon(store.call, q.insert_run, new_run_id, SPEC, "/repo", "hardened",
                               time.time())
            nursery.start_soon(store.read_cached, "counts", counts)
    assert await store.read_cached("counts", counts) == {"running": 1, "queued": 20}
    await store.close()

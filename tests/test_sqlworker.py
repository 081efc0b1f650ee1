"""The one SQLite worker (store writer and reader, memory): real sqlite3 on a real file."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import trio
import trio.testing
from autopack.actors._sqlworker import Job, SqlWorker


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE IF NOT EXISTS t (v INTEGER NOT NULL)")
    return conn


def _insert(conn: sqlite3.Connection, v: int | None) -> int:
    conn.execute("INSERT INTO t (v) VALUES (?)", (v,))
    return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])


async def test_jobs_run_in_order_and_an_error_stays_its_callers(tmp_path: Path) -> None:
    worker = SqlWorker("test-sql", lambda: _connect(tmp_path / "db"), close=sqlite3.Connection.close)
    worker.start()
    await worker.connected()
    assert await worker.call(_insert, 1) == 1
    with pytest.raises(sqlite3.IntegrityError):
        await worker.call(_insert, None)  # NOT NULL
    assert await worker.call(_insert, 2) == 2
    await worker.join()
    assert not worker.alive
    assert (worker.jobs, worker.batches) == (3, 3)


async def test_waiting_jobs_make_one_batch(tmp_path: Path) -> None:
    """The Store's group commit: jobs queued while the thread is busy come as one batch."""
    entered, gate = threading.Event(), threading.Event()
    batches: list[int] = []

    def run_batch(conn: sqlite3.Connection, batch: list[Job]) -> None:
        entered.set()
        gate.wait(30)
        batches.append(len(batch))
        for job in batch:
            job.run(conn)

    worker = SqlWorker("test-sql", lambda: _connect(tmp_path / "db"), run_batch=run_batch)
    worker.start()
    await worker.connected()
    results: list[int] = []

    async def one(v: int) -> None:
        results.append(await worker.call(_insert, v))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, 0)
        await trio.to_thread.run_sync(entered.wait, 30)  # the thread holds the first job
        for v in range(1, 11):
            nursery.start_soon(one, v)
        await trio.testing.wait_all_tasks_blocked()  # all ten queued, waiting
        assert worker.queue_depth == 10
        gate.set()
    assert batches == [1, 10]
    assert sorted(results) == list(range(1, 12))
    await worker.join()


async def test_posted_job_error_is_logged_and_on_posted_runs(tmp_path: Path, caplog) -> None:
    posted = trio.Event()
    worker = SqlWorker("test-sql", lambda: _connect(tmp_path / "db"), on_posted=posted.set)
    worker.start()
    await worker.connected()
    worker.post(_insert, None)
    with trio.fail_after(10):
        await posted.wait()
    assert "test-sql: a posted write failed: NOT NULL constraint failed" in caplog.text
    await worker.join()


async def test_connect_failure_reaches_the_caller_and_stop_finishes_queued_jobs(
        tmp_path: Path) -> None:
    broken = SqlWorker("test-sql", lambda: sqlite3.connect(tmp_path / "no" / "such" / "db"))
    broken.start()
    with pytest.raises(sqlite3.OperationalError):
        await broken.connected()
    assert not broken.alive
    worker = SqlWorker("test-sql", lambda: _connect(tmp_path / "db"))
    worker.start()
    await worker.connected()
    worker.post(_insert, 7)
    await worker.join()  # the posted job ran before the end
    with sqlite3.connect(tmp_path / "db") as db:
        assert db.execute("SELECT v FROM t").fetchall() == [(7,)]

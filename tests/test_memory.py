"""The memory actor: real SQLite file, real threads, real degradation.

Nothing here patches the actor: a lock is held, tables are dropped and the
actor is cancelled from the outside, the way things go wrong in production.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import msgspec
import pytest
import trio
import trio.testing
from autopack.actors._context import TRUNCATED_MARKER
from autopack.actors._memory import (
    SCHEMA_VERSION,
    ContextResult,
    MemoryActor,
    MemoryClient,
    MemoryStuck,
    fts_query,
    handle_get_context,
    handle_get_lessons,
    ranked_query,
)
from autopack.protocol import (
    Classification,
    ContextReply,
    Error,
    FrameBuffer,
    GetContext,
    GetLessons,
    Hello,
    Lessons,
    PhaseSpec,
    RunSpec,
    Welcome,
    decode_request,
    encode_frame,
)
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = "/srv/repos/app"
SPEC = RunSpec(
    goal="Add a /health endpoint to the API",
    constraints=["keep the public API unchanged"],
    non_goals=["no new dependencies"],
    phases=[PhaseSpec(id="config", goal="Load settings from config.yaml"),
            PhaseSpec(id="endpoint", goal="Add GET /health")],
)
YAML_FAILURE = Classification(pattern="python_missing_dep",
                              evidence=["ModuleNotFoundError: No module named 'yaml.constructor'"])


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "autopack.db")


@asynccontextmanager
async def serving(actor: MemoryActor) -> AsyncIterator[MemoryClient]:
    async with anyio.create_task_group() as tg:
        await tg.start(actor.serve)
        yield actor.client()
        tg.cancel_scope.cancel()


@contextmanager
def write_lock(db_path: str) -> Iterator[sqlite3.Connection]:
    """Another connection (think: the Store in a long transaction) holding the write lock.

    In WAL mode readers are not blocked, but memory's writes wait for it, and
    every request queued behind a waiting write waits too.
    """
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("CREATE TABLE IF NOT EXISTS lock_probe (x)")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")
        conn.close()


async def eventually_ok(client: MemoryClient) -> ContextResult:
    """Ask until memory answers again (after a lock is released the thread finishes its wait)."""
    with anyio.fail_after(10):
        while True:
            result = await client.context_for("run1", "config", "builder")
            if not result.degraded:
                return result
            await anyio.sleep(0.05)


# ---------------------------------------------------------------------- schema
def test_sqlite_has_fts5() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(a)")
    assert sqlite3.sqlite_version_info >= (3, 9, 0)


async def test_schema_is_own_tables_and_version(db_path: str) -> None:
    pre = sqlite3.connect(db_path)
    pre.execute("PRAGMA user_version=7")  # the Store's, not ours
    pre.close()
    async with serving(MemoryActor(db_path)) as client:
        assert await client.record_intention("run1", REPO, SPEC)
    conn = sqlite3.connect(db_path)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"mem_meta", "mem_intentions", "mem_outcomes", "mem_lessons", "mem_lessons_fts"} <= names
    assert conn.execute("SELECT value FROM mem_meta WHERE key='schema_version'").fetchone() == (
        str(SCHEMA_VERSION),)
    assert conn.execute("PRAGMA user_version").fetchone() == (7,)


# ---------------------------------------------------------------------- FTS query
@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        pytest.param(["No module named 'yaml'"], '("module" OR "named" OR "yaml")', id="quotes"),
        pytest.param(['a "b" NEAR(c) -d * OR AND'], '("b" OR "near" OR "c" OR "d")',
                     id="fts-syntax"),
        pytest.param(["42 1.5 !!"], None, id="no-words"),
        pytest.param(["python_missing_dep", "Yaml yaml"],
                     '("python" OR "missing" OR "dep" OR "yaml")', id="dedupe-lower-underscore"),
    ],
)
def test_fts_query(texts: list[str], expected: str | None) -> None:
    assert fts_query(texts) == expected


@pytest.mark.parametrize(
    ("dfs", "expected"),
    [
        pytest.param([("module", 0)], None, id="nothing-matches"),
        pytest.param([("module", 90), ("yaml", 20)], '("yaml" OR "module")', id="all-rare"),
        pytest.param([("module", 1752), ("named", 1752), ("yaml", 180), ("nope", 0)],
                     '("yaml") AND ("module" OR "named" OR "yaml")', id="common-words-only-score"),
        pytest.param([("error", 5000), ("failed", 4000)], '("failed") AND ("error" OR "failed")',
                     id="at-least-one-anchor"),
    ],
)
def test_ranked_query(dfs: list[tuple[str, int]], expected: str | None) -> None:
    assert ranked_query(dfs) == expected


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_fts_query_never_a_syntax_error(text: str) -> None:
    query = fts_query([text])
    if query is None:
        return
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(a)")
    conn.execute("SELECT * FROM t WHERE t MATCH ?", (query,)).fetchall()


# ---------------------------------------------------------------------- lessons
async def test_lesson_found_for_similar_failure(db_path: str) -> None:
    async with serving(MemoryActor(db_path)) as client:
        distractors = [
            ("ModuleNotFoundError: No module named 'requests'", "pip install requests"),
            ("FAILED tests/test_api.py::test_yaml_dump - AssertionError", "fix the dump order"),
            ("error[E0425]: cannot find value `x` in this scope", "declare x"),
            ("ImportError: cannot import name 'Loader' from 'json'", "use json.loads"),
        ]
        for sig, fix in distractors:
            assert await client.record_lesson(REPO, sig, fix, "python_missing_dep")
        assert await client.record_lesson(REPO, "ModuleNotFoundError: No module named 'yaml'",
                                          "add PyYAML to requirements.txt", "python_missing_dep")
        assert await client.record_lesson("/other/repo", "No module named 'yaml'", "other repo fix")
        found = await client.lessons(REPO, "No module named 'yaml.constructor'")
        assert found is not None
        assert found[0]["fix"] == "add PyYAML to requirements.txt"
        assert all(lesson["repo"] == REPO for lesson in found)
        # The same lesson reaches a Doctor prompt for a new run on that repository.
        assert await client.record_intention("run2", REPO, SPEC)
        result = await client.context_for("run2", "config", "doctor", YAML_FAILURE)
        assert not result.degraded
        assert "fixed by: add PyYAML to requirements.txt" in result.text
        assert "other repo fix" not in result.text


async def test_fixed_failure_becomes_a_lesson(db_path: str) -> None:
    async with serving(MemoryActor(db_path)) as client:
        assert await client.record_intention("run1", REPO, SPEC)
        assert await client.record_outcome(
            "run1", "config", 1, tried="import yaml in settings.py", pattern="python_missing_dep",
            evidence="ModuleNotFoundError: No module named 'yaml'", worked=False)
        ctx = await client.context_for("run1", "config", "builder")
        assert ("Failed attempt 1: import yaml in settings.py -> python_missing_dep: "
                "ModuleNotFoundError: No module named 'yaml'") in ctx.text
        assert await client.record_outcome("run1", "config", 2, tried="installed PyYAML",
                                           pattern=None, evidence="", worked=True,
                                           fix="pip install PyYAML")
        # The same fix learned again counts, it does not duplicate.
        assert await client.record_lesson(REPO, "ModuleNotFoundError: No module named 'yaml'",
                                          "pip install PyYAML", "python_missing_dep")
        lessons = await client.lessons(REPO, None)
        assert lessons is not None
        assert [(d["signature"], d["fix"], d["pattern"], d["seen"]) for d in lessons] == [
            ("ModuleNotFoundError: No module named 'yaml'", "pip install PyYAML",
             "python_missing_dep", 2)]


async def test_context_bounds_and_order(db_path: str) -> None:
    actor = MemoryActor(db_path, builder_bytes=600, doctor_bytes=200)
    async with serving(actor) as client:
        big = RunSpec(goal="Grüße 日本 " * 20, constraints=["é" * 400],
                      phases=[PhaseSpec(id="config", goal="phase goal " * 50)])
        assert await client.record_intention("run1", REPO, big)
        for attempt in range(1, 6):
            assert await client.record_outcome("run1", "config", attempt, tried="😀" * 300,
                                               pattern="test_failure", evidence="x" * 5000,
                                               worked=False)
        builder = await client.context_for("run1", "config", "builder")
        doctor = await client.context_for("run1", "config", "doctor")
        again = await client.context_for("run1", "config", "builder")
    assert builder == again
    assert builder.bytes == len(builder.text.encode()) <= 600
    assert doctor.bytes == len(doctor.text.encode()) <= 200
    assert builder.text.startswith("Goal: Grüße")
    assert builder.text.endswith(TRUNCATED_MARKER)


async def test_unknown_run_and_disabled(db_path: str) -> None:
    async with serving(MemoryActor(db_path)) as client:
        assert await client.context_for("nope", None, "builder") == ContextResult("", 0, False)
    actor = MemoryActor(db_path, enabled=False)
    async with serving(actor) as client:
        assert await client.record_intention("run1", REPO, SPEC)
        assert await client.context_for("run1", "config", "builder") == ContextResult("", 0, False)
        assert actor.statistics().state == "disabled"


# ---------------------------------------------------------------------- degradation
async def test_not_running_is_degraded_at_once(db_path: str) -> None:
    actor = MemoryActor(db_path, deadline_s=30)  # would hang the test if it waited
    client = actor.client()
    assert await client.context_for("run1", "config", "builder") == ContextResult("", 0, True)
    assert await client.record_intention("run1", REPO, SPEC) is False
    assert await client.lessons(None, None) is None
    stats = actor.statistics()
    assert (stats.state, stats.errors) == ("down", 3)
    assert stats.last_error is not None
    assert "down" in stats.last_error


async def test_cancelled_then_restarted(db_path: str) -> None:
    actor = MemoryActor(db_path, deadline_s=30)
    async with serving(actor) as client:
        assert await client.record_intention("run1", REPO, SPEC)
    assert actor.statistics().state == "down"
    assert (await client.context_for("run1", "config", "builder")).degraded
    async with serving(actor) as client2:
        result = await client.context_for("run1", "config", "builder")  # the old client works too
        assert not result.degraded
        assert result.text.startswith("Goal: Add a /health")
        assert not (await client2.context_for("run1", "config", "builder")).degraded
        stats = actor.statistics()
        assert (stats.state, stats.restarts) == ("ok", 1)


async def test_locked_database_answers_at_deadline(db_path: str) -> None:
    actor = MemoryActor(db_path, deadline_s=0.2, busy_timeout_s=5.0)
    async with serving(actor) as client:
        assert await client.record_intention("run1", REPO, SPEC)
        with write_lock(db_path):
            assert not await client.record_lesson(REPO, "sig", "fix")
            # A read queued behind the waiting write is degraded too, at its deadline.
            result = await client.context_for("run1", "config", "builder")
            assert result == ContextResult("", 0, True)
            stats = actor.statistics()
            assert stats.state == "degraded"
            assert stats.timeouts >= 1
        healed = await eventually_ok(client)
        assert healed.text.startswith("Goal: ")
        assert actor.statistics().state == "ok"


async def test_short_busy_timeout_is_an_error_not_a_hang(db_path: str) -> None:
    actor = MemoryActor(db_path, deadline_s=5.0, busy_timeout_s=0.05)
    async with serving(actor) as client:
        assert await client.record_intention("run1", REPO, SPEC)
        with write_lock(db_path):
            assert not await client.record_lesson(REPO, "sig", "fix")
            # Reads do not wait for the writer (WAL).
            assert not (await client.context_for("run1", "config", "builder")).degraded
        stats = actor.statistics()
        assert stats.errors == 1
        assert stats.timeouts == 0
        assert stats.last_error is not None
        assert "locked" in stats.last_error
        assert not (await client.context_for("run1", "config", "builder")).degraded


async def test_stuck_thread_crashes_serve_and_restart_heals(db_path: str) -> None:
    # the set-up write gets a generous deadline (a loaded machine may take longer than 0.1 s)
    async with serving(MemoryActor(db_path)) as setup:
        assert await setup.record_intention("run1", REPO, SPEC)
    actor = MemoryActor(db_path, deadline_s=0.1, busy_timeout_s=30.0, stuck_after_s=0.3)
    client = actor.client()
    with write_lock(db_path):
        with pytest.RaisesGroup(MemoryStuck):
            async with anyio.create_task_group() as tg:
                await tg.start(actor.serve)
                assert not await client.record_lesson(REPO, "sig", "fix")
                await anyio.sleep_forever()  # until serve gives up on its thread
        assert actor.statistics().state == "down"
        assert (await client.context_for("run1", "config", "builder")).degraded
    async with serving(actor):  # a fresh thread, while the old one may still be waiting
        await eventually_ok(client)
        assert actor.statistics().restarts == 1


async def test_stopping_fails_waiting_callers_at_once(db_path: str) -> None:
    """Callers queued on a stopped actor return now, not at their (here: 60 s) deadline."""
    actor = MemoryActor(db_path, deadline_s=60, busy_timeout_s=60, stuck_after_s=60)
    client = actor.client()
    async with serving(actor):
        assert await client.record_intention("run1", REPO, SPEC)
    results: list[object] = []

    async def write() -> None:
        results.append(await client.record_lesson(REPO, "sig", "fix"))

    async def read() -> None:
        results.append(await client.context_for("run1", "config", "builder"))

    with write_lock(db_path), anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            serve_scope = anyio.CancelScope()

            async def run_serve(*, task_status: anyio.abc.TaskStatus[None]) -> None:
                with serve_scope:
                    await actor.serve(task_status=task_status)

            await tg.start(run_serve)
            tg.start_soon(write)
            tg.start_soon(read)
            # Both requests reach the actor: the write blocks its thread on the lock, the
            # read waits behind it (queued, or in the same batch on a loaded machine).
            for _ in range(1000):  # bounded by the fail_after above
                if actor.statistics().requests >= 3:
                    break
                await trio.sleep(0.01)
            await trio.sleep(0.05)
            serve_scope.cancel()
    # the write was stuck on the lock: it fails at once; the read either ran before it
    # (a real answer) or waited behind it (degraded at once) — never at its 60 s deadline
    assert False in results
    assert len(results) == 2
    (read_result,) = [r for r in results if isinstance(r, ContextResult)]
    assert read_result.degraded or read_result.bytes > 0
    assert actor.statistics().state == "down"


async def test_dropped_tables_degrade_then_repair(db_path: str) -> None:
    actor = MemoryActor(db_path)
    async with serving(actor) as client:
        assert await client.record_intention("run1", REPO, SPEC)
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("DROP TABLE mem_intentions")
        other.execute("DROP TABLE mem_outcomes")
        assert (await client.context_for("run1", "config", "builder")).degraded
        stats = actor.statistics()
        assert stats.state == "degraded"
        assert stats.errors == 1
        assert stats.last_error is not None
        assert "no such table" in stats.last_error
        # The next request recreates what was dropped (the intention itself is gone).
        assert await client.context_for("run1", "config", "builder") == ContextResult("", 0, False)
        assert await client.record_intention("run1", REPO, SPEC)
        assert actor.statistics().state == "ok"
        # A table replaced by something unusable stays degraded (and never raises).
        assert await client.record_lesson(REPO, "No module named 'yaml'", "pip install PyYAML")
        other.execute("DROP TABLE mem_lessons")
        other.execute("CREATE TABLE mem_lessons (x)")
        assert await client.lessons(REPO, "yaml") is None
        assert await client.lessons(REPO, None) is None
        assert (await client.context_for("run1", "config", "doctor", YAML_FAILURE)).degraded
        assert actor.statistics().state == "degraded"
        other.close()


# ---------------------------------------------------------------------- control helpers + CLI
async def test_handlers(db_path: str) -> None:
    async with serving(MemoryActor(db_path)) as client:
        assert await client.record_intention("run1", REPO, SPEC)
        reply = await handle_get_context(client, GetContext(run_id="run1"), current_phase="config")
        assert isinstance(reply, ContextReply)
        assert "Current phase (config): Load settings from config.yaml" in reply.text
        assert reply.bytes == len(reply.text.encode())
        bad = await handle_get_context(client, GetContext(run_id="run1", role="poet"))
        assert isinstance(bad, Error)
        assert bad.code == "not_supported"
        assert await handle_get_lessons(client, GetLessons()) == Lessons(lessons=[])
    down = await handle_get_lessons(client, GetLessons())
    assert isinstance(down, Error)
    assert down.code == "unavailable"
    assert (await handle_get_context(client, GetContext(run_id="run1"))) == ContextReply(
        text="", bytes=0, degraded=True)


async def _serve_control(listener: anyio.abc.Listener[anyio.abc.ByteStream],
                         memory: MemoryClient) -> None:
    """A minimal control socket answering hello, context and lessons through our handlers."""

    async def one(stream: anyio.abc.ByteStream) -> None:
        buf = FrameBuffer()
        async with stream:
            while True:
                body = buf.next_frame()
                if body is None:
                    try:
                        buf.feed(await stream.receive())
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
                    continue
                req = decode_request(body)
                reply: msgspec.Struct
                if isinstance(req, Hello):
                    reply = Welcome(daemon="test")
                elif isinstance(req, GetContext):
                    reply = await handle_get_context(memory, req, current_phase="config")
                else:
                    reply = await handle_get_lessons(memory, req)
                await stream.send(encode_frame(reply))  # type: ignore[arg-type]

    async with listener:
        await listener.serve(one)


def _ctl(sock: str, *args: str) -> subprocess.CompletedProcess[str]:
    code = ("import argparse, sys\n"
            "from autopack.daemon.ctl import _memory as _ctl_memory\n"
            "p = argparse.ArgumentParser(prog='autopackctl'); p.add_argument('--socket')\n"
            "_ctl_memory.register(p.add_subparsers(required=True))\n"
            "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n")
    return subprocess.run([sys.executable, "-c", code, "--socket", sock, *args],
                          capture_output=True, text=True, timeout=30, check=False)


async def test_cli_through_a_socket(db_path: str, tmp_path: Path) -> None:
    sock = str(tmp_path / "ctl.sock")
    async with serving(MemoryActor(db_path)) as client, anyio.create_task_group() as tg:
        assert await client.record_intention("run1", REPO, SPEC)
        assert await client.record_lesson(REPO, "No module named 'yaml'", "pip install PyYAML",
                                          "python_missing_dep")
        listener = await anyio.create_unix_listener(sock)
        tg.start_soon(_serve_control, listener, client)
        out = await anyio.to_thread.run_sync(_ctl, sock, "context", "run1", "--json")
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert set(data) == {"text", "bytes", "degraded"}
        assert data["text"].startswith("Goal: Add a /health endpoint")
        assert data["bytes"] == len(data["text"].encode())
        assert data["degraded"] is False
        human = await anyio.to_thread.run_sync(_ctl, sock, "context", "run1", "--role", "doctor")
        assert human.returncode == 0
        assert human.stdout.splitlines()[-1] == f"({len(human.stdout.rsplit(chr(10), 2)[0].encode())} bytes)"
        found = await anyio.to_thread.run_sync(_ctl, sock, "lessons", "--repo", REPO, "--search",
                                               "yaml.constructor", "--json")
        assert found.returncode == 0, found.stderr
        assert [d["fix"] for d in json.loads(found.stdout)["lessons"]] == ["pip install PyYAML"]
        tg.cancel_scope.cancel()
    missing = _ctl(str(tmp_path / "nobody.sock"), "lessons")
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1
    assert "not running" in missing.stderr

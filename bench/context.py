"""Benchmark: memory ``context_for`` latency, healthy and degraded.

Usage::

    .venv/bin/python bench/context.py [--lessons 10000] [--calls 2000] [--deadline-ms 250]

Prints p50/p99/max of ``context_for`` (Builder without a failure, Doctor with
one) with N lessons stored for the run's repository (target: p99 <= 5 ms),
then the latency a caller sees when the actor is down (not serving) and when
it is hung behind a lock (must be <= the deadline, never a hang). Real SQLite
file in a temporary directory, real thread, trio through anyio.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
from autopack.actors._memory import MemoryActor, MemoryClient
from autopack.protocol import Classification, PhaseSpec, RunSpec

REPO = "/srv/repos/app"
_MODULES = ["yaml", "requests", "numpy", "pandas", "attr", "toml", "jwt", "dateutil", "bs4", "PIL",
            "cv2", "sklearn", "lxml", "psycopg2", "redis", "boto3", "grpc", "google.protobuf"]
_TEMPLATES = [
    ("python_missing_dep", "ModuleNotFoundError: No module named '{mod}.{sub}'", "pip install {mod}"),
    ("python_import_error", "ImportError: cannot import name '{name}' from '{mod}'",
     "pin {mod} to the version that has {name}"),
    ("test_failure", "FAILED tests/test_{sub}.py::test_{name} - AssertionError: assert {n} == {m}",
     "fix off-by-one in {sub}.{name}"),
    ("compile_error", "error[E0425]: cannot find value `{name}` in this scope --> src/{sub}.rs:{n}",
     "declare {name} before use in {sub}.rs"),
    ("wrong_working_dir", "ERROR: file or directory not found: tests/{sub}/",
     "run pytest from the repository root"),
    ("network_timeout", "ReadTimeout: HTTPSConnectionPool(host='{sub}.example', port=443)",
     "retry with backoff"),
]


def lesson_rows(count: int, seed: int = 7) -> list[tuple[str, str, str, str, float, float]]:
    rng = random.Random(seed)
    words = [f"{a}{b}" for a in ("load", "parse", "dump", "read", "write", "check", "make")
             for b in ("er", "_conf", "_item", "_user", "_cache", "_index", "_state")]
    rows = []
    for i in range(count):
        pattern, sig, fix = rng.choice(_TEMPLATES)
        values = {"mod": rng.choice(_MODULES), "sub": rng.choice(words), "name": rng.choice(words),
                  "n": rng.randint(1, 400), "m": rng.randint(1, 400)}
        rows.append((REPO, sig.format(**values) + f" #{i}", fix.format(**values),
                     pattern, time.time(), time.time()))
    return rows


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(name: str, samples: list[float]) -> None:
    ms = [s * 1000 for s in samples]
    print(f"{name:<44} n={len(ms):<5} p50={percentile(ms, 0.5):7.3f} ms  "
          f"p99={percentile(ms, 0.99):7.3f} ms  max={max(ms):7.3f} ms  "
          f"mean={statistics.fmean(ms):7.3f} ms")


async def timed(fn: Callable[[], Awaitable[object]], calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t0)
    return out


async def healthy(db: str, args: argparse.Namespace) -> None:
    actor = MemoryActor(db, deadline_s=args.deadline_ms / 1000)
    spec = RunSpec(goal="Add a /health endpoint to the API", constraints=["keep the API stable"],
                   non_goals=["no new dependencies"],
                   phases=[PhaseSpec(id="config", goal="Load settings from config.yaml"),
                           PhaseSpec(id="endpoint", goal="Add GET /health")])
    failure = Classification(pattern="python_missing_dep",
                             evidence=["ModuleNotFoundError: No module named 'yaml.constructor'"])
    async with anyio.create_task_group() as tg:
        await tg.start(actor.serve)
        client: MemoryClient = actor.client()
        assert await client.record_intention("run1", REPO, spec)
        for attempt in (1, 2):
            assert await client.record_outcome(
                "run1", "config", attempt, tried=f"attempt {attempt}", pattern="python_missing_dep",
                evidence="ModuleNotFoundError: No module named 'yaml'", worked=False)
        t0 = time.perf_counter()
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO mem_lessons (repo, signature, fix, pattern, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)", lesson_rows(args.lessons))
        conn.execute("COMMIT")
        conn.close()
        print(f"stored {args.lessons} lessons in {time.perf_counter() - t0:.2f} s")
        sample = await client.context_for("run1", "config", "doctor", failure)
        print(f"doctor context: {sample.bytes} bytes, degraded={sample.degraded}")
        await timed(lambda: client.context_for("run1", "config", "builder"), 50)  # warm up
        summary("context_for builder (lessons via FTS5)",
                await timed(lambda: client.context_for("run1", "config", "builder"), args.calls))
        summary("context_for doctor + failure (FTS5)",
                await timed(lambda: client.context_for("run1", "config", "doctor", failure),
                            args.calls))
        summary("lessons(search='yaml constructor')",
                await timed(lambda: client.lessons(REPO, "yaml constructor", 20), args.calls))
        stats = actor.statistics()
        print(f"stats: state={stats.state} requests={stats.requests} timeouts={stats.timeouts} "
              f"errors={stats.errors}")
        tg.cancel_scope.cancel()


async def degraded(db: str, args: argparse.Namespace) -> None:
    deadline = args.deadline_ms / 1000
    down = MemoryActor(db, deadline_s=deadline)
    client = down.client()
    summary("actor down (not serving)",
            await timed(lambda: client.context_for("run1", "config", "builder"), args.calls))
    hung = MemoryActor(db, deadline_s=deadline, busy_timeout_s=60.0, stuck_after_s=60.0)
    async with anyio.create_task_group() as tg:
        await tg.start(hung.serve)
        client = hung.client()
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        lock.execute("CREATE TABLE IF NOT EXISTS bench_lock (x)")
        # One write waits for the lock; reads queued behind it wait too.
        samples = await timed(lambda: client.record_lesson(REPO, "sig", "fix"), 1)
        samples += await timed(lambda: client.context_for("run1", "config", "builder"), 9)
        lock.execute("COMMIT")
        lock.close()
        summary(f"actor hung behind a lock (deadline {args.deadline_ms} ms)", samples)
        print(f"all answered by the deadline: {max(samples) <= deadline + 0.05} "
              f"(max {max(samples) * 1000:.1f} ms)")
        tg.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lessons", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--deadline-ms", type=int, default=250)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "autopack.db")
        anyio.run(healthy, db, args, backend="trio")
        anyio.run(degraded, db, args, backend="trio")


if __name__ == "__main__":
    main()

"""The run engine under deterministic simulation: 10,000 seeded runs with faults.

See ``tests/engine_sim.py`` for the world, the faults and the invariants. A failure
names its seed and prints the one-line command that replays it with a trace.
``AUTOPACK_SIM_RUNS`` changes the count (CI keeps the default).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import engine_sim

RUNS = int(os.environ.get("AUTOPACK_SIM_RUNS", "10000"))


def test_ten_thousand_simulated_runs_keep_every_invariant() -> None:
    started = time.perf_counter()
    ends, seen = engine_sim.run_many(0, RUNS)  # raises SimFailure with the replay command
    seconds = time.perf_counter() - started
    print(f"{RUNS} simulated runs in {seconds:.1f} s: {ends}")
    assert sum(ends.values()) == RUNS
    # the simulation reaches every end, every engine event and action, and every fault
    assert set(ends) == {"succeeded", "failed", "cancelled"}
    assert engine_sim.uncovered(seen) == set()


def test_a_seed_replays_the_same_run() -> None:
    a, b = engine_sim.simulate(4242), engine_sim.simulate(4242)
    for key in ("state", "steps", "faults", "reason", "seen"):
        assert a[key] == b[key], key


def test_a_broken_invariant_names_its_seed_and_the_replay_command() -> None:
    exc = engine_sim.SimFailure(17, "phase p0 committed twice", [])
    assert "seed 17" in str(exc)
    assert "python tests/engine_sim.py --seed 17 --trace" in str(exc)


def test_the_command_line_replays_one_seed() -> None:
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "tests/engine_sim.py", "--seed", "3", "--trace"],
                         cwd=root, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "'state':" in out.stdout


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_seeds_differ(seed: int) -> None:
    # different seeds give different runs (the world is not stuck on one path)
    runs = {engine_sim.simulate(s)["steps"] for s in range(seed * 10, seed * 10 + 10)}
    assert len(runs) > 3

"""Classifier throughput and latency, side by side with the naive approach.

    .venv/bin/python bench/classify.py [--size-mb 10] [--runs 5]

Builds a CI-style log from realistic noise lines (install, build and test
progress, and the non-decisive lines of the fixture corpus) with the decisive
error near the end, and a typical 50 KB log the same way. Prints MB/s on the
big log, p50/p99 latency on the 50 KB log, and the same for the naive
approach (every rule's regex over the whole text), and the speed-up.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

from autopack.actors.classifier import classify
from autopack.actors.classifier._core import naive_classify
from autopack.protocol import ClassifyContext

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "failures"

NOISE = [
    "2024-05-01T12:00:{n:02d}.123Z Downloading https://files.pythonhosted.org/packages/ab/cd/pkg_{n}-1.2.3-py3-none-any.whl (123 kB)",
    "Collecting requests>=2.{n} (from -r requirements.txt (line {n}))",
    "  Using cached urllib3-2.2.{n}-py3-none-any.whl (121 kB)",
    "Requirement already satisfied: idna<4,>=2.5 in ./.venv/lib/python3.11/site-packages (from requests) (3.{n})",
    "   Compiling serde v1.0.{n}",
    "   Compiling tokio v1.3{n}.0",
    "warning: unused variable: `x{n}`",
    "gcc -O2 -Wall -Werror=implicit -c src/module_{n}.c -o build/module_{n}.o",
    "[{n}/900] Building CXX object CMakeFiles/app.dir/src/file_{n}.cpp.o",
    "npm warn deprecated inflight@1.0.{n}: This module is not supported, and leaks memory.",
    "added {n} packages, and audited 512 packages in 3s",
    "tests/test_api.py::test_endpoint_{n} PASSED                                [ 42%]",
    "test tests::case_{n} ... ok",
    "ok {n} - handles empty input",
    "    Finished `release` profile [optimized] target(s) in {n}.21s",
    "##[group]Run actions/checkout@v4",
    "  with: fetch-depth: {n}",
    "INFO  [alembic.runtime.migration] Running upgrade {n} -> {n}1, add index",
    "DEBUG retrying request to /api/v1/items?page={n} (handled)",
    "  File \"/app/src/handlers/item_{n}.py\", line {n}, in handle",
]


def corpus_noise() -> list[str]:
    """Lines of the corpus that decide nothing (lines of the no-pattern fixtures)."""
    out: list[str] = []
    for p in sorted(FIXTURES.glob("none_*.log")):
        for line in p.read_text(errors="replace").splitlines():
            if line.strip() and classify(line).pattern is None:
                out.append(line)
    return out


def build_log(size: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    extra = corpus_noise()
    # Mostly progress lines, with the corpus's non-decisive lines (tracebacks, test names,
    # warnings) making up about 10 % of the log.
    pool = NOISE * max(1, (9 * len(extra)) // len(NOISE)) + extra
    lines: list[str] = []
    total = 0
    n = 0
    tail = (FIXTURES / "pmd_pytest_collect_sklearn.log").read_text()
    while total < size - len(tail) - 2000:
        line = rng.choice(pool).replace("{n}", str(n % 97))
        lines.append(line)
        total += len(line) + 1
        n += 1
    lines.append(tail)  # the decisive error, near the end
    lines.extend(rng.choice(NOISE).replace("{n}", "1") for _ in range(10))
    return "\n".join(lines) + "\n"


def timed(fn, *args: object, runs: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(*args)
        out.append(time.perf_counter() - t)
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--small-runs", type=int, default=300)
    args = ap.parse_args()

    big = build_log(int(args.size_mb * 1024 * 1024))
    small = build_log(50 * 1024, seed=2)
    ctx = ClassifyContext(command="pytest -q")
    mb = len(big.encode()) / 1e6
    c = classify(big, 2, ctx)
    assert c.pattern == "python_missing_dep", c
    naive_answer = naive_classify(big)  # regex only, no context checks: may differ

    fast_big = timed(classify, big, 2, ctx, runs=args.runs)
    naive_big = timed(naive_classify, big, runs=max(1, min(args.runs, 2)))
    fast_small = timed(classify, small, 2, ctx, runs=args.small_runs)
    naive_small = timed(naive_classify, small, runs=max(20, args.small_runs // 10))

    fb, nb = statistics.median(fast_big), statistics.median(naive_big)
    print(f"log: {mb:.1f} MB, {big.count(chr(10))} lines, decisive error at {big.find('ModuleNotFoundError') / len(big):.1%}")
    print(f"{'':28s}{'classify':>14s}{'naive':>14s}{'speed-up':>10s}")
    print(f"{'10 MB throughput (MB/s)':28s}{mb / fb:14.1f}{mb / nb:14.2f}{nb / fb:9.1f}x")
    print(f"{'10 MB time (ms, median)':28s}{fb * 1e3:14.1f}{nb * 1e3:14.1f}")
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        f, n = pct(fast_small, q), pct(naive_small, q)
        print(f"{'50 KB latency ' + name + ' (ms)':28s}{f * 1e3:14.3f}{n * 1e3:14.3f}{n / f:9.1f}x")
    print(f"answers: classify={c.pattern} naive={naive_answer}")
    print("targets: >= 50 MB/s, <= 2 ms p50 for 50 KB, >= 10x naive")
    return 0


if __name__ == "__main__":
    sys.exit(main())

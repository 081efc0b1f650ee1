"""Classifier throughput and latency, side by side with the naive approach.

    .venv/bin/python bench/classify.py [--size-mb 10] [--runs 5] [--small-runs 300]

What the log contains
---------------------
A CI job's output as a runner prints it, built from sections that repeat in a
realistic order (seeded, so every run measures the same text):

- a job header (``##[group]`` steps, checkout, cache restore, ``env:`` lines);
- ``pip install``: Collecting / Downloading / ``━━━`` progress bars (non-ASCII,
  as pip prints them) / Requirement already satisfied / Building wheel /
  Installing collected packages / Successfully installed, the root-user
  WARNING and pip's "ERROR: pip's dependency resolver does not currently take
  into account ..." notice that pip prints on success;
- ``npm ci``: ``npm warn deprecated ...`` (which say "not supported", "no
  longer supported", "leaks memory"), added/audited/found 0 vulnerabilities;
- a C/C++ build (gcc command lines with ``-Werror=...``, CMake ``[ 42%]``
  progress, ``warning:`` diagnostics with their source excerpt and caret);
- a Rust build and test run (Compiling ..., rustc ``warning:`` blocks with
  ``-->`` locations, ``test x::handles_error ... ok``, ``test result: ok. N
  passed; 0 failed``);
- pytest progress lines, verbose ``PASSED``/``SKIPPED``/``XFAIL`` lines with
  test names such as ``test_timeout_is_retried`` or ``test_error_response``,
  DeprecationWarning blocks of the warnings summary, and the final
  ``N passed, M skipped, K xfailed`` line;
- node's test runner (``ok N - ...``, ``# pass N``, ``# fail 0``) and Go
  (``go: downloading ...``, ``ok  pkg 0.12s``);
- application log lines of the code under test at INFO/WARNING level,
  some of which say "retrying after timeout" or "connection reset, retrying";
- the lines of the fixture corpus's no-pattern logs (tracebacks, panics,
  tests named after errors) that decide nothing, about 3 % of the lines.

Noise lines are drawn per section from these templates with varying numbers
and names; nothing is chosen to avoid the classifier's stems (many lines
contain "error", "not ", "fail", "timeout"). The decisive error (a pytest
collection ``ModuleNotFoundError``, from the corpus) sits near the end,
followed by a few lines of the job's teardown. The 50 KB log is built the
same way with another seed.

Prints MB/s on the big log, p50/p99 latency on the 50 KB log, and the same
for the naive approach (every rule's regex over the whole text), and the
speed-up.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from autopack.actors.classifier import classify
from autopack.actors.classifier._core import naive_classify
from autopack.protocol import ClassifyContext

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "failures"

PKGS = ["requests", "urllib3", "idna", "certifi", "charset-normalizer", "numpy", "pandas", "pydantic",
        "pydantic-core", "typing-extensions", "attrs", "packaging", "pluggy", "pytest", "pytest-cov",
        "coverage", "httpx", "anyio", "sniffio", "h11", "click", "rich", "pygments", "markdown-it-py",
        "sqlalchemy", "greenlet", "alembic", "mako", "jinja2", "markupsafe", "python-dateutil", "six"]
NPM = ["inflight@1.0.6", "glob@7.2.3", "rimraf@3.0.2", "har-validator@5.1.5", "request@2.88.2",
       "uuid@3.4.0", "querystring@0.2.0", "abab@2.0.6", "domexception@4.0.0", "w3c-hr-time@1.0.2"]
CRATES = ["serde", "serde_json", "tokio", "tokio-macros", "hyper", "http", "bytes", "mio", "libc",
          "syn", "quote", "proc-macro2", "unicode-ident", "itoa", "ryu", "memchr", "regex", "anyhow"]
WORDS = ["parse", "error_response", "timeout_is_retried", "handles_missing_field", "not_found_returns_404",
         "auth_header", "rate_window", "empty_input", "unicode_names", "large_payload", "failure_is_logged",
         "connection_reset", "permission_check", "invalid_token", "retry_after_header", "default_config"]

Template = Callable[[random.Random, int], str]


def _pick(rng: random.Random, xs: list[str]) -> str:
    return xs[rng.randrange(len(xs))]


def _ver(rng: random.Random) -> str:
    return f"{rng.randint(0, 5)}.{rng.randint(0, 30)}.{rng.randint(0, 12)}"


SECTIONS: dict[str, list[Template]] = {
    "header": [
        lambda r, n: "##[group]Run actions/checkout@v4",
        lambda r, n: f"  with:\n    fetch-depth: {n % 5}\n    persist-credentials: false",
        lambda r, n: "##[endgroup]",
        lambda r, n: f"Cache restored from key: setup-python-Linux-x64-22.04-python-3.11.{n % 9}-pip-{r.getrandbits(64):016x}",
        lambda r, n: "shell: /usr/bin/bash -e {0}",
        lambda r, n: "env:\n  PYTHONUNBUFFERED: 1\n  FORCE_COLOR: 0\n  PIP_DISABLE_PIP_VERSION_CHECK: 1",
        lambda r, n: f"Run pytest -q --timeout=120 -p no:cacheprovider tests/ --junitxml=report-{n}.xml",
    ],
    "pip": [
        lambda r, n: f"Collecting {_pick(r, PKGS)}>={_ver(r)} (from -r requirements.txt (line {n % 40 + 1}))",
        lambda r, n: f"  Downloading {_pick(r, PKGS).replace('-', '_')}-{_ver(r)}-py3-none-any.whl.metadata ({r.randint(1, 90)}.{n % 10} kB)",
        lambda r, n: f"  Downloading {_pick(r, PKGS).replace('-', '_')}-{_ver(r)}-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl ({r.randint(1, 20)}.{n % 10} MB)",
        lambda r, n: f"     {'━' * 40} {r.randint(1, 900)}.{n % 10}/{r.randint(900, 999)}.0 kB {r.randint(1, 90)}.{n % 10} MB/s eta 0:00:00",
        lambda r, n: f"Requirement already satisfied: {_pick(r, PKGS)}<4,>=2.5 in ./.venv/lib/python3.11/site-packages (from {_pick(r, PKGS)}) ({_ver(r)})",
        lambda r, n: f"  Using cached {_pick(r, PKGS).replace('-', '_')}-{_ver(r)}-py3-none-any.whl ({r.randint(10, 900)} kB)",
        lambda r, n: f"Building wheels for collected packages: {_pick(r, PKGS)}\n  Building wheel for {_pick(r, PKGS)} (pyproject.toml): started\n  Building wheel for {_pick(r, PKGS)} (pyproject.toml): finished with status 'done'",
        lambda r, n: f"  Created wheel for app: filename=app-0.{n % 9}.0-py3-none-any.whl size={r.randint(1000, 99999)} sha256={r.getrandbits(128):032x}",
        lambda r, n: "Installing collected packages: " + ", ".join(r.sample(PKGS, 8)),
        lambda r, n: "Successfully installed " + " ".join(f"{p}-{_ver(r)}" for p in r.sample(PKGS, 10)),
        lambda r, n: "WARNING: Running pip as the 'root' user can result in broken permissions and conflicting behaviour with the system package manager. It is recommended to use a virtual environment instead: https://pip.pypa.io/warnings/venv",
        lambda r, n: "ERROR: pip's dependency resolver does not currently take into account all the packages that are installed. This behaviour is the source of the following dependency conflicts.",
    ],
    "npm": [
        lambda r, n: f"npm warn deprecated {_pick(r, NPM)}: This module is not supported, and leaks memory. Do not use it. Check out lru-cache if you want a good and tested way to coalesce async requests by a key value, which is much more comprehensive and powerful.",
        lambda r, n: f"npm warn deprecated {_pick(r, NPM)}: Glob versions prior to v9 are no longer supported",
        lambda r, n: f"npm warn deprecated {_pick(r, NPM)}: Use your platform's native DOMException instead",
        lambda r, n: f"added {r.randint(100, 1500)} packages, and audited {r.randint(100, 1500)} packages in {r.randint(2, 60)}s",
        lambda r, n: f"{r.randint(50, 300)} packages are looking for funding\n  run `npm fund` for details",
        lambda r, n: "found 0 vulnerabilities",
        lambda r, n: f"> app@1.{n % 9}.0 build\n> tsc -p tsconfig.build.json && vite build",
        lambda r, n: f"vite v5.{n % 9}.{n % 7} building for production...\n✓ {r.randint(100, 900)} modules transformed.",
        lambda r, n: f"dist/assets/index-{r.getrandbits(32):08x}.js   {r.randint(10, 900)}.{n % 100:02d} kB │ gzip: {r.randint(5, 90)}.{n % 100:02d} kB",
    ],
    "c": [
        lambda r, n: f"gcc -O2 -g -Wall -Wextra -Werror=implicit-function-declaration -Werror=format-security -fPIC -Iinclude -c src/mod_{n % 50}.c -o build/mod_{n % 50}.o",
        lambda r, n: f"[{n % 100:3d}%] Building CXX object CMakeFiles/app.dir/src/file_{n % 80}.cpp.o",
        lambda r, n: f"[{n % 100:3d}%] Linking CXX executable app_{n % 3}",
        lambda r, n: f"src/mod_{n % 50}.c:{r.randint(1, 900)}:{r.randint(1, 40)}: warning: unused variable 'tmp{n % 9}' [-Wunused-variable]\n  {r.randint(1, 900)} |     int tmp{n % 9} = 0;\n      |         ^~~~",
        lambda r, n: f"src/file_{n % 80}.cpp:{r.randint(1, 900)}:{r.randint(1, 40)}: warning: comparison of integer expressions of different signedness: 'int' and 'size_t' [-Wsign-compare]",
        lambda r, n: f"make[{n % 3}]: Entering directory '/home/runner/work/app/app/build/sub{n % 7}'",
        lambda r, n: f"make[{n % 3}]: Leaving directory '/home/runner/work/app/app/build/sub{n % 7}'",
    ],
    "rust": [
        lambda r, n: f"   Compiling {_pick(r, CRATES)} v{_ver(r)}",
        lambda r, n: f"  Downloaded {_pick(r, CRATES)} v{_ver(r)}",
        lambda r, n: f"warning: unused import: `std::io::{_pick(r, ['Read', 'Write', 'BufRead'])}`\n --> src/parser_{n % 9}.rs:{r.randint(1, 400)}:5\n  |\n{n % 90 + 1:<3}| use std::io::Read;\n  |     ^^^^^^^^^^^^^^\n  |\n  = note: `#[warn(unused_imports)]` on by default",
        lambda r, n: f"    Finished `test` profile [unoptimized + debuginfo] target(s) in {r.randint(1, 99)}.{n % 100:02d}s",
        lambda r, n: f"     Running unittests src/lib.rs (target/debug/deps/app-{r.getrandbits(64):016x})",
        lambda r, n: f"test tests::{_pick(r, WORDS)}_{n % 30} ... ok",
        lambda r, n: f"test result: ok. {r.randint(1, 300)} passed; 0 failed; {n % 3} ignored; 0 measured; 0 filtered out; finished in {n % 9}.{n % 100:02d}s",
    ],
    "pytest": [
        lambda r, n: f"tests/test_{_pick(r, WORDS)}.py {'.' * r.randint(5, 40)}{_pick(r, ['', 's', 'x', '..s'])}{' ' * r.randint(1, 20)}[{n % 100:3d}%]",
        lambda r, n: f"tests/test_api.py::test_{_pick(r, WORDS)}[case{n % 20}] PASSED{' ' * r.randint(4, 30)}[{n % 100:3d}%]",
        lambda r, n: f"tests/test_client.py::test_{_pick(r, WORDS)} SKIPPED (needs network){' ' * r.randint(1, 9)}[{n % 100:3d}%]",
        lambda r, n: f"tests/test_client.py::test_{_pick(r, WORDS)} XFAIL (known flaky upstream){' ' * r.randint(1, 9)}[{n % 100:3d}%]",
        lambda r, n: f"  /home/runner/work/app/app/.venv/lib/python3.11/site-packages/dateutil/tz/tz.py:{r.randint(1, 99)}: DeprecationWarning: datetime.datetime.utcfromtimestamp() is deprecated and scheduled for removal in a future version. Use timezone-aware objects to represent datetimes in UTC: datetime.datetime.fromtimestamp(timestamp, datetime.UTC).\n    EPOCH = datetime.datetime.utcfromtimestamp(0)",
        lambda r, n: f"tests/test_{_pick(r, WORDS)}.py::test_{n % 50}\n  /home/runner/work/app/app/src/app/compat.py:{r.randint(1, 99)}: PendingDeprecationWarning: the error_handler argument is deprecated; pass on_error instead",
        lambda r, n: "-- Docs: https://docs.pytest.org/en/stable/how-to/capture-warnings.html",
        lambda r, n: f"---------- coverage: platform linux, python 3.11.{n % 9}-final-0 -----------\nsrc/app/{_pick(r, WORDS)}.py{' ' * 20}{r.randint(10, 400)}{' ' * 6}{r.randint(0, 40)}{' ' * 4}{r.randint(50, 100)}%",
        lambda r, n: f"========== {r.randint(100, 2000)} passed, {r.randint(1, 20)} skipped, {n % 4} xfailed, {r.randint(1, 40)} warnings in {r.randint(10, 300)}.{n % 100:02d}s ==========",
    ],
    "node": [
        lambda r, n: f"ok {n % 500 + 1} - {_pick(r, WORDS).replace('_', ' ')}",
        lambda r, n: f"  ---\n  duration_ms: {r.randint(0, 900)}.{n % 1000:03d}\n  ...",
        lambda r, n: f"# tests {r.randint(10, 600)}\n# suites {n % 30}\n# pass {r.randint(10, 600)}\n# fail 0\n# cancelled 0\n# skipped {n % 3}",
        lambda r, n: f"go: downloading github.com/{_pick(r, ['stretchr', 'spf13', 'google', 'pkg'])}/{_pick(r, ['testify', 'cobra', 'uuid', 'errors'])} v1.{n % 20}.{n % 7}",
        lambda r, n: f"ok  \tgithub.com/acme/app/internal/{_pick(r, ['auth', 'store', 'api', 'errors'])}\t{n % 9}.{n % 1000:03d}s\tcoverage: {r.randint(40, 99)}.{n % 10}% of statements",
    ],
    "app": [
        lambda r, n: f"2024-05-01 12:{n % 60:02d}:{r.randint(0, 59):02d},{r.randint(0, 999):03d} INFO app.worker: processed batch {n} ({r.randint(1, 999)} items) in 0.{r.randint(1, 999):03d}s",
        lambda r, n: f"2024-05-01 12:{n % 60:02d}:{r.randint(0, 59):02d},{r.randint(0, 999):03d} DEBUG app.http: GET /api/v1/items?page={n % 40} -> 200 ({r.randint(1, 90)} ms)",
        lambda r, n: f"2024-05-01 12:{n % 60:02d}:{r.randint(0, 59):02d},{r.randint(0, 999):03d} WARNING app.client: upstream slow, retrying after timeout (attempt {n % 3 + 1}/3)",
        lambda r, n: f"2024-05-01 12:{n % 60:02d}:{r.randint(0, 59):02d},{r.randint(0, 999):03d} WARNING app.db: connection reset by peer, reconnecting (pool size {n % 10})",
        lambda r, n: f"INFO  [alembic.runtime.migration] Running upgrade {r.getrandbits(48):012x} -> {r.getrandbits(48):012x}, add index on items.created_at",
    ],
}
# Relative weight of each section in the job (pip and tests dominate a typical Python CI log).
WEIGHTS = {"header": 2, "pip": 22, "npm": 8, "c": 14, "rust": 14, "pytest": 25, "node": 6, "app": 9}


def corpus_noise() -> list[str]:
    """Lines of the corpus's no-pattern logs that decide nothing on their own."""
    out: list[str] = []
    for p in sorted(FIXTURES.glob("none_*.log")):
        for line in p.read_text(errors="replace").splitlines():
            if line.strip() and classify(line).pattern is None:
                out.append(line)
    return out


def build_log(size: int, seed: int = 1) -> str:
    """A CI job's output of about ``size`` characters with the decisive error near the end."""
    rng = random.Random(seed)
    extra = corpus_noise()
    names = list(WEIGHTS)
    weights = [WEIGHTS[k] for k in names]
    tail = (FIXTURES / "pmd_pytest_collect_sklearn.log").read_text()
    chunks: list[str] = []
    total = 0
    n = 0
    budget = size - len(tail) - 600
    while total < budget:
        section = SECTIONS[rng.choices(names, weights)[0]]
        for _ in range(rng.randint(5, 60)):  # a run of lines from one step of the job
            line = _pick(rng, extra) if rng.random() < 0.03 else section[rng.randrange(len(section))](rng, n)
            chunks.append(line)
            total += len(line) + 1
            n += 1
            if total >= budget:
                break
    chunks.append(tail.rstrip("\n"))  # the decisive error, near the end
    chunks.append("##[error]Process completed with exit code 2.")
    chunks.append("Post job cleanup.\n[command]/usr/bin/git version\ngit version 2.43.0")
    chunks.append("Cleaning up orphan processes")
    return "\n".join(chunks) + "\n"


def timed(fn: Callable[..., object], *args: object, runs: int) -> list[float]:
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
    assert classify(small, 2, ctx).pattern == "python_missing_dep"
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

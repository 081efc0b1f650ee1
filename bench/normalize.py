"""Benchmark: normalize a 50 KB plan against a 5,000-file git repository.

Target: ≤ 100 ms per normalization (median). Prints figures; asserts nothing.

    .venv/bin/python bench/normalize.py [--runs 50] [--files 5000] [--plan-kb 50]

Each run is a full :func:`normalize_plan` call: parse the plan, list the
repository's files (once per call, nothing is cached between calls), detect
the toolchain, match every phase's words to paths, build and validate the spec.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autopack.actors._normalize import normalize_plan

AREAS = ["api", "billing", "users", "orders", "search", "auth", "cache", "reports", "mail",
         "storage", "payments", "audit", "export", "imports", "admin", "metrics", "jobs",
         "queue", "config", "cli"]


def make_repo(root: Path, n_files: int) -> Path:
    """A Python project with ``n_files`` files spread over packages, committed to git."""
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "big"\nversion = "1"\n'
                                         '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    made = 1
    i = 0
    while made < n_files:
        area = AREAS[i % len(AREAS)]
        sub = f"part{(i // len(AREAS)) % 25}"
        if i % 5 == 4:
            path = root / "tests" / area / f"test_{sub}_{i}.py"
        else:
            path = root / "src" / "big" / area / sub / f"{area}_module_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"VALUE = {i}\n")
        made += 1
        i += 1
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@localhost",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@localhost"}
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(root), "commit", "-qm", "init"], check=True, env=env)
    return root


def make_plan(kb: int) -> str:
    """A Markdown plan of about ``kb`` KB: sections, then phases with paths, commands, prose."""
    out = ["# Big refactor of the service", "", "## Goal",
           "Split every area into smaller modules and cover each with tests.", "",
           "## Constraints", "- keep the public API unchanged", "- no new dependencies", "",
           "## Non-goals", "- a new UI", "", "## Phases", ""]
    n = 0
    while sum(len(x) + 1 for x in out) < kb * 1024:
        area = AREAS[n % len(AREAS)]
        kind = n % 4
        out.append(f"### Phase {n + 1}: {['Refactor', 'Extend', 'Document', 'Verify'][kind]} "
                   f"the {area} area, part {n}")
        if kind == 0:
            out.append(f"Move the helpers of `src/big/{area}/part{n % 25}/` into a new module "
                       f"`src/big/{area}/helpers_{n}.py` and update the imports.")
            out.append(f"- keep `{area}` behaviour identical\n- add tests in "
                       f"`tests/{area}/test_helpers_{n}.py`")
            out.append(f"Run `python -m pytest -q tests/{area}`.")
        elif kind == 1:
            out.append(f"Extend the {area} handling with better error messages for bad input; "
                       "make sure each message names the field it is about and the value that "
                       "was refused, and that the log line carries the request id.")
        elif kind == 2:
            out.append(f"Write the docstrings of the {area} package and describe the public "
                       f"functions, their errors and one example each in docs/{area}.md.")
        else:
            out.append(f"```bash\npython -m pytest -q tests/{area}\nruff check src/big/{area}\n```")
        out.append("")
        n += 1
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--plan-kb", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(Path(tmp) / "repo", args.files)
        plan = make_plan(args.plan_kb)
        n_files = sum(len(f) for d, _, f in os.walk(repo) if "/.git" not in d)
        result = normalize_plan(plan, repo)  # warm-up (imports, page cache)
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            normalize_plan(plan, repo)
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
    print(f"plan: {len(plan.encode()) / 1024:.1f} KB, {len(result.spec.phases)} phases; "
          f"repo: {n_files} files; runs: {args.runs}")
    print(f"confidence {result.confidence:.2f}, {len(result.warnings)} warnings")
    print(f"normalize_plan: median {statistics.median(times):.1f} ms, p99 {p99:.1f} ms, "
          f"min {times[0]:.1f} ms, max {times[-1]:.1f} ms (target: median <= 100 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write the A/B scenario set (``bench/ab/scenarios/*.json``) from the definitions below.

Run ``python bench/ab/gen_scenarios.py`` after editing; the JSON files are committed
so that each scenario can be read on its own. One file per scenario::

    {"id", "category", "description", "expect": {"hardened", "baseline"},
     "wheels": {module: __init__.py source}  # built as local wheels, offline
     "files": {path: text}          # the repository template (one commit)
     "spec": {...}                  # the run spec (RunSpec JSON)
     "scripts": [...]}              # scripted Builder/Doctor replies (actors/testing/_modelserver.py)

Token figures are *scripted* (what a real call of that shape typically costs):
Builder turns 0.9-6K input (plus a cached 2.6K prefix of tools + system prompt),
Doctor calls 9.5-11.9K input (failure excerpt + context) and 200-400 output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent / "scenarios"
PREFIX = 2600  # cached prefix (tools + system prompt) of a Builder conversation
CHECK = "python -m pytest -q -p no:cacheprovider"

BASE_FILES = {
    ".gitignore": ".state/\n__pycache__/\n.pytest_cache/\n",
    "README.md": "# calc\n\nA small calculator library.\n",
    "calc/__init__.py": "",
    "calc/core.py": "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n",
    "tests/__init__.py": "",
    "tests/test_core.py": "from calc.core import add, mul\n\n\ndef test_add():\n"
                          "    assert add(1, 2) == 3\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n",
}


# ------------------------------------------------------------------ building blocks
def usage(i: int, o: int, cc: int = 0, cr: int = 0) -> dict[str, int]:
    return {"input_tokens": i, "output_tokens": o, "cache_creation_input_tokens": cc,
            "cache_read_input_tokens": cr}


def create(path: str, text: str) -> dict[str, Any]:
    return {"type": "tool_use", "name": "str_replace_based_edit_tool",
            "input": {"command": "create", "path": path, "file_text": text}}


def replace(path: str, old: str, new: str) -> dict[str, Any]:
    return {"type": "tool_use", "name": "str_replace_based_edit_tool",
            "input": {"command": "str_replace", "path": path, "old_str": old, "new_str": new}}


def bash(command: str) -> dict[str, Any]:
    return {"type": "tool_use", "name": "bash", "input": {"command": command}}


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def attempt(phase: str, n: int, edits: list[dict[str, Any]], *, say: str, k: int = 0,
            errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One Builder attempt: one turn of edits, then the closing turn.

    ``k`` varies the figures a little per scenario. A first attempt writes the
    cached prefix; a retry reads it and carries the failure and hint (more input).
    """
    if n == 1:
        first = usage(3000 + 80 * k, 380 + 8 * k, cc=PREFIX)
    else:
        first = usage(4000 + 80 * k, 340 + 8 * k, cr=PREFIX)
    step0: dict[str, Any] = {"content": [text(say), *edits], "usage": first}
    if errors:
        step0["errors"] = errors
    steps = [step0]
    if edits:
        steps.append({"content": [text("Done.")], "usage": usage(850 + 41 * k, 60, cr=PREFIX)})
    return {"match": f"Carry out phase {phase} (attempt {n})", "steps": steps}


def doctor(phase: str, n: int, action: str, *, k: int = 0, hint: str = "", command: str = "",
           rationale: str) -> dict[str, Any]:
    """One Doctor answer (a forced ``doctor_decision`` tool call)."""
    decision: dict[str, Any] = {"action": action, "rationale": rationale}
    if hint:
        decision["hint"] = hint
    if command:
        decision["command"] = command
    return {"match": f"Diagnose the failure of phase {phase} (attempt {n})",
            "steps": [{"content": [{"type": "tool_use", "name": "doctor_decision", "input": decision}],
                       "usage": usage(9400 + 100 * k, 200 + 8 * k)}]}


def spec(phases: list[dict[str, Any]], goal: str, **limits: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"goal": goal, "phases": phases,
                           "constraints": ["keep the public API of calc.core unchanged"]}
    if limits:
        out["limits"] = limits
    return out


def build(pid: str, goal: str, checks: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": pid, "goal": goal, "kind": "build", "scope": ["calc/**", "tests/**", "pyproject.toml"],
            "checks": checks or [CHECK], **extra}


def manifest(name: str) -> dict[str, str]:
    return {"pyproject.toml": f'[project]\nname = "{name}"\nversion = "0.1.0"\ndependencies = []\n'}


SCENARIOS: list[dict[str, Any]] = []


def scenario(sid: str, category: str, description: str, expect: dict[str, str], *,
             phases: list[dict[str, Any]], scripts: list[dict[str, Any]],
             files: dict[str, str] | None = None, wheels: dict[str, str] | None = None,
             goal: str | None = None, limits: dict[str, Any] | None = None) -> None:
    SCENARIOS.append({
        "id": sid, "category": category, "description": description, "expect": expect,
        "wheels": wheels or {}, "files": {**BASE_FILES, **manifest(sid.replace("-", "_")), **(files or {})},
        "spec": spec(phases, goal or description, **(limits or {})), "scripts": scripts})


# ------------------------------------------------------------------ missing dependencies
def missing_dep(k: int, sid: str, module: str, feature: str, code: str, test: str,
                baseline: str, lib: str) -> None:
    pid = sid
    a1 = attempt(pid, 1, [create(f"calc/{feature}.py", code), create(f"tests/test_{feature}.py", test)],
                 say=f"Adding calc/{feature}.py on top of {module}, with a test.", k=k)
    scripts = [a1]
    if baseline == "run_fix":
        scripts.append(doctor(pid, 1, "run_fix", k=k, command=f"python -m pip install {module}",
                              rationale=f"ModuleNotFoundError: {module} is not installed in the "
                                        "run's environment"))
        expect_b = "Doctor run_fix (pip install), checks again, pass in 1 attempt"
    else:
        scripts.append(doctor(pid, 1, "retry_with_hint", k=k,
                              hint=f"`{module}` is not installed. Run `python -m pip install {module}` "
                                   "and add it to [project].dependencies in pyproject.toml.",
                              rationale=f"ModuleNotFoundError for {module}"))
        scripts.append(attempt(pid, 2, [bash(f"python -m pip install {module}"),
                                        replace("pyproject.toml", "dependencies = []",
                                                f'dependencies = ["{module}"]')],
                               say=f"Installing {module} and declaring it.", k=k))
        expect_b = "Doctor hint, second Builder attempt installs and declares it"
    scenario(sid, "python_missing_dep",
             f"Add calc/{feature}.py using the third-party module {module}",
             {"hardened": "classified python_missing_dep, local wheel installed into the run venv, "
                          "checks again, pass in 1 attempt, no Doctor",
              "baseline": expect_b},
             phases=[build(pid, f"Add calc/{feature}.py using {module}, with a test")],
             scripts=scripts, wheels={module: lib})


missing_dep(1, "s01-units-dep", "apbench_units", "units",
            "from apbench_units import FACTORS\n\n\ndef to_metres(value, unit):\n"
            "    return value * FACTORS[unit]\n",
            "from calc.units import to_metres\n\n\ndef test_km():\n    assert to_metres(2, 'km') == 2000.0\n",
            "run_fix", 'FACTORS = {"m": 1.0, "km": 1000.0, "ft": 0.3048}\n')
missing_dep(2, "s02-slug-dep", "apbench_slug", "slug",
            "import apbench_slug\n\n\ndef slugify(title):\n    return apbench_slug.normalize(title)\n",
            "from calc.slug import slugify\n\n\ndef test_slug():\n    assert slugify('Hello World') == 'hello-world'\n",
            "retry_with_hint",
            "def normalize(title):\n    return '-'.join(title.lower().split())\n")
missing_dep(3, "s03-color-dep", "apbench_color", "colors",
            "from apbench_color import NAMES\n\n\ndef hexcode(name):\n    return NAMES[name]\n",
            "from calc.colors import hexcode\n\n\ndef test_red():\n    assert hexcode('red') == '#ff0000'\n",
            "run_fix", 'NAMES = {"red": "#ff0000", "green": "#00ff00"}\n')
missing_dep(4, "s04-money-dep", "apbench_money", "money",
            "from apbench_money import round_cents\n\n\ndef total(items):\n"
            "    return round_cents(sum(items))\n",
            "from calc.money import total\n\n\ndef test_total():\n    assert total([0.1, 0.2]) == 0.3\n",
            "retry_with_hint", "def round_cents(x):\n    return round(x, 2)\n")

# ------------------------------------------------------------------ syntax errors
def fix_on_retry(k: int, sid: str, category: str, description: str, goal: str,
                 first: list[dict[str, Any]], second: list[dict[str, Any]], doctor_hint: str,
                 *, checks: list[str] | None = None, hard: str, files: dict[str, str] | None = None,
                 timeout_s: float | None = None) -> None:
    """Builder attempt 1 leaves a classifiable mistake, attempt 2 fixes it.
    Hardened: the classifier's hint goes to attempt 2 (no Doctor). Baseline: a Doctor
    call produces the hint."""
    pid = sid
    extra = {"timeout_s": timeout_s} if timeout_s else {}
    scenario(sid, category, description,
             {"hardened": hard + ", classifier hint, pass in attempt 2, no Doctor",
              "baseline": "Doctor hint, pass in attempt 2"},
             phases=[build(pid, goal, checks, **extra)], files=files,
             scripts=[attempt(pid, 1, first, say="Implementing it.", k=k),
                      doctor(pid, 1, "retry_with_hint", k=k, hint=doctor_hint,
                             rationale="the failure output names the problem"),
                      attempt(pid, 2, second, say="Fixing the reported problem.", k=k)])


fix_on_retry(5, "s05-syntax-colon", "python_syntax_error", "missing colon in a new function",
             "Add calc/stats.py with mean(xs), with a test",
             [create("calc/stats.py", "def mean(xs)\n    return sum(xs) / len(xs)\n"),
              create("tests/test_stats.py", "from calc.stats import mean\n\n\ndef test_mean():\n"
                                            "    assert mean([1, 2, 3]) == 2\n")],
             [replace("calc/stats.py", "def mean(xs)\n", "def mean(xs):\n")],
             "calc/stats.py line 1: `def mean(xs)` lacks the colon.",
             hard="python_syntax_error")
fix_on_retry(6, "s06-syntax-indent", "python_syntax_error", "IndentationError in an edited function",
             "Add clamp(x, lo, hi) to calc/core.py, with a test",
             [replace("calc/core.py", "def mul(a, b):\n    return a * b\n",
                      "def mul(a, b):\n    return a * b\n\n\ndef clamp(x, lo, hi):\n"
                      "    if x < lo:\n    return lo\n    return min(x, hi)\n"),
              create("tests/test_clamp.py", "from calc.core import clamp\n\n\ndef test_clamp():\n"
                                            "    assert clamp(5, 0, 3) == 3\n    assert clamp(-1, 0, 3) == 0\n")],
             [replace("calc/core.py", "    if x < lo:\n    return lo\n", "    if x < lo:\n        return lo\n")],
             "calc/core.py: IndentationError in clamp(): indent the body of `if x < lo:`.",
             hard="python_syntax_error")
fix_on_retry(7, "s07-syntax-paren", "python_syntax_error", "unclosed parenthesis, caught by compileall",
             "Add calc/fmt.py with percent(x), byte-compiled cleanly",
             [create("calc/fmt.py", "def percent(x):\n    return '{:.1f}%'.format(x * 100\n")],
             [replace("calc/fmt.py", "format(x * 100\n", "format(x * 100)\n")],
             "calc/fmt.py line 2: close the parenthesis of format(...).",
             checks=["python -m compileall -q calc", CHECK], hard="python_syntax_error")

# ------------------------------------------------------------------ failing tests
fix_on_retry(8, "s08-test-offbyone", "test_failure", "off-by-one in a new range helper",
             "Add calc/ranges.py with inclusive(a, b) returning the list a..b, with a test",
             [create("calc/ranges.py", "def inclusive(a, b):\n    return list(range(a, b))\n"),
              create("tests/test_ranges.py", "from calc.ranges import inclusive\n\n\ndef test_inclusive():\n"
                                             "    assert inclusive(1, 3) == [1, 2, 3]\n")],
             [replace("calc/ranges.py", "range(a, b)", "range(a, b + 1)")],
             "test_inclusive fails: inclusive(1, 3) misses the upper bound; use range(a, b + 1).",
             hard="test_failure")
fix_on_retry(9, "s09-test-rounding", "test_failure", "float rounding in a new average",
             "Add calc/avg.py with avg2(a, b) rounded to 2 decimals, with a test",
             [create("calc/avg.py", "def avg2(a, b):\n    return (a + b) / 2\n"),
              create("tests/test_avg.py", "from calc.avg import avg2\n\n\ndef test_avg2():\n"
                                          "    assert avg2(0.1, 0.2) == 0.15\n")],
             [replace("calc/avg.py", "    return (a + b) / 2\n", "    return round((a + b) / 2, 2)\n")],
             "test_avg2: the result is not rounded; return round((a + b) / 2, 2).",
             hard="test_failure")
fix_on_retry(10, "s10-test-unittest", "test_failure", "a unittest suite with a wrong sign",
             "Add calc/sign.py with sign(x) in -1/0/1, tested with unittest",
             [create("calc/sign.py", "def sign(x):\n    return (x > 0) - (x > 0)\n"),
              create("tests/test_sign.py", "import unittest\n\nfrom calc.sign import sign\n\n\n"
                                           "class SignTest(unittest.TestCase):\n    def test_sign(self):\n"
                                           "        self.assertEqual(sign(-4), -1)\n        self.assertEqual(sign(3), 1)\n")],
             [replace("calc/sign.py", "(x > 0) - (x > 0)", "(x > 0) - (x < 0)")],
             "SignTest.test_sign: sign(-4) returns 0; compare with (x < 0) in the second term.",
             checks=["python -m unittest -q"], hard="test_failure")
fix_on_retry(11, "s11-test-unpack", "test_failure", "a ValueError (unpacking) in a parser under test",
             "Add calc/parse.py with parse_pair('k=v') -> (k, v), with a test",
             [create("calc/parse.py", "def parse_pair(s):\n    k, v = s.split(':')\n    return k, v\n"),
              create("tests/test_parse.py", "from calc.parse import parse_pair\n\n\ndef test_pair():\n"
                                            "    assert parse_pair('a=1') == ('a', '1')\n")],
             [replace("calc/parse.py", "s.split(':')", "s.split('=', 1)")],
             "test_pair: parse_pair splits on ':' but the format is 'k=v'.",
             hard="test_failure")

# ------------------------------------------------------------------ other classified patterns
fix_on_retry(12, "s12-import-name", "python_import_error", "importing a name that does not exist",
             "Add calc/api.py exposing total(xs) built on calc.core.add, with a test",
             [create("calc/api.py", "from calc.core import add, add_all\n\n\ndef total(xs):\n"
                                    "    return add_all(xs)\n"),
              create("tests/test_api.py", "from calc.api import total\n\n\ndef test_total():\n"
                                          "    assert total([1, 2, 3]) == 6\n")],
             [create("calc/api.py", "from functools import reduce\n\nfrom calc.core import add\n\n\n"
                                    "def total(xs):\n    return reduce(add, xs, 0)\n")],
             "calc.core has no add_all; fold with add instead.",
             hard="python_import_error")
fix_on_retry(13, "s13-no-tests", "no_tests_collected", "tests written under a name pytest does not collect",
             "Add calc/even.py with is_even(n) and its tests in tests/even/",
             [create("calc/even.py", "def is_even(n):\n    return n % 2 == 0\n"),
              create("tests/even/check_even.py", "from calc.even import is_even\n\n\ndef test_even():\n"
                                            "    assert is_even(4)\n")],
             [bash("mv tests/even/check_even.py tests/even/test_even.py")],
             "pytest collected nothing in tests/even: name the file test_even.py.",
             checks=["python -m pytest -q -p no:cacheprovider tests/even"],
             hard="no_tests_collected")
fix_on_retry(14, "s14-wrong-dir", "wrong_working_dir", "a script created at the wrong path",
             "Add the report script calc/tools/report.py that prints the sum of 1..10",
             [create("calc/report.py", "print(sum(range(1, 11)))\n")],
             [create("calc/tools/__init__.py", ""),
              create("calc/tools/report.py", "print(sum(range(1, 11)))\n")],
             "The check runs calc/tools/report.py, which does not exist; the script was created as calc/report.py.",
             checks=["python calc/tools/report.py"], hard="wrong_working_dir")
fix_on_retry(15, "s15-timeout", "command_timeout", "an endless loop in new code; the check is stopped",
             "Add calc/collatz.py with steps(n) (Collatz steps to 1), with a test",
             [create("calc/collatz.py", "def steps(n):\n    count = 0\n    while n != 1:\n"
                                        "        n = n // 2 if n % 2 == 0 else 3 * n + 1\n"
                                        "        count += 0\n        n = max(n, 2)\n    return count\n"),
              create("tests/test_collatz.py", "from calc.collatz import steps\n\n\ndef test_steps():\n"
                                              "    assert steps(6) == 8\n")],
             [create("calc/collatz.py", "def steps(n):\n    count = 0\n    while n != 1:\n"
                                        "        n = n // 2 if n % 2 == 0 else 3 * n + 1\n"
                                        "        count += 1\n    return count\n")],
             "steps() never terminates: `n = max(n, 2)` keeps n from reaching 1.",
             hard="command_timeout", timeout_s=6)
fix_on_retry(16, "s16-c-compile", "compile_error", "a C helper with a type error",
             "Add native/fast.c with int twice(int) and keep it compiling with cc -Wall -Werror",
             [create("native/fast.c", "int twice(int x) {\n    return x * 2\n}\n")],
             [replace("native/fast.c", "return x * 2\n", "return x * 2;\n")],
             "native/fast.c:2: expected ';' after the return expression.",
             checks=["mkdir -p .state && cc -Wall -Werror -c native/fast.c -o .state/fast.o"],
             hard="compile_error")
SCENARIOS[-1]["spec"]["phases"][0]["scope"].append("native/**")

# ------------------------------------------------------------------ unknown failures (Doctor in both arms)
CHANGELOG_CHECK = """import sys
from pathlib import Path

version = Path("VERSION").read_text().strip()
if f"## {version}" not in Path("CHANGES.md").read_text():
    print(f"release-gate: CHANGES.md has no section for {version}")
    print("release-gate: 1 problem, refusing to continue")
    sys.exit(3)
print("release-gate: ok")
"""
scenario("s17-unknown-changelog", "unclassified", "a project-specific release gate fails",
         {"hardened": "unclassified, Doctor hint, pass in attempt 2",
          "baseline": "Doctor hint, pass in attempt 2"},
         files={"VERSION": "0.2.0\n", "CHANGES.md": "# Changes\n\n## 0.1.0\n- first\n",
                "tools/release_gate.py": CHANGELOG_CHECK},
         phases=[{**build("s17-unknown-changelog", "Bump to 0.2.0: add calc/core.sub(a, b)",
                          ["python tools/release_gate.py", CHECK]),
                  "scope": ["calc/**", "tests/**", "CHANGES.md"]}],
         scripts=[attempt("s17-unknown-changelog", 1, [replace("calc/core.py", "def mul(a, b):",
                                                               "def sub(a, b):\n    return a - b\n\n\ndef mul(a, b):")],
                          say="Adding sub().", k=17),
                  doctor("s17-unknown-changelog", 1, "retry_with_hint", k=17,
                         hint="tools/release_gate.py wants a '## 0.2.0' section in CHANGES.md.",
                         rationale="project-specific release gate"),
                  attempt("s17-unknown-changelog", 2, [replace("CHANGES.md", "# Changes\n\n",
                                                               "# Changes\n\n## 0.2.0\n- sub()\n\n")],
                          say="Adding the changelog entry.", k=17)])

GEN_TABLE = """from pathlib import Path

rows = [f"{n} {n * n}" for n in range(1, 11)]
Path("calc/squares.txt").write_text("\\n".join(rows) + "\\n")
"""
GEN_CHECK = """import sys
from pathlib import Path

want = "\\n".join(f"{n} {n * n}" for n in range(1, 11)) + "\\n"
have = Path("calc/squares.txt").read_text() if Path("calc/squares.txt").exists() else ""
if have != want:
    print("stale artefact: calc/squares.txt differs from its generator output")
    print("hint-free gate: regenerate artefacts before committing")
    sys.exit(2)
"""
scenario("s18-unknown-generated", "unclassified", "a generated artefact is stale; the Doctor runs the generator",
         {"hardened": "unclassified, Doctor run_fix, checks again, pass in attempt 1",
          "baseline": "Doctor run_fix, checks again, pass in attempt 1"},
         files={"tools/gen_squares.py": GEN_TABLE, "tools/check_generated.py": GEN_CHECK,
                "calc/squares.txt": "1 1\n2 4\n"},
         phases=[build("s18-unknown-generated", "Add calc/squares.py reading calc/squares.txt",
                       ["python tools/check_generated.py", CHECK])],
         scripts=[attempt("s18-unknown-generated", 1, [create("calc/squares.py",
                          "from pathlib import Path\n\n\ndef table():\n"
                          "    return Path(__file__).with_name('squares.txt').read_text().split()\n")],
                          say="Adding the reader.", k=18),
                  doctor("s18-unknown-generated", 1, "run_fix", k=18, command="python tools/gen_squares.py",
                         rationale="the generated table is stale; its generator is tools/gen_squares.py")])

LICENSE_CHECK = """import sys
from pathlib import Path

bad = [str(p) for p in sorted(Path("calc").rglob("*.py"))
       if p.stat().st_size and not p.read_text().startswith("# SPDX-License-Identifier: MIT")]
for b in bad:
    print(f"spdx: {b}: header absent")
sys.exit(4 if bad else 0)
"""
HDR = "# SPDX-License-Identifier: MIT\n"
scenario("s19-unknown-license", "unclassified", "a licence-header gate rejects a new file",
         {"hardened": "unclassified, Doctor hint, pass in attempt 2",
          "baseline": "Doctor hint, pass in attempt 2"},
         files={"tools/spdx.py": LICENSE_CHECK,
                "calc/core.py": HDR + BASE_FILES["calc/core.py"]},
         phases=[build("s19-unknown-license", "Add calc/neg.py with neg(x)", ["python tools/spdx.py", CHECK])],
         scripts=[attempt("s19-unknown-license", 1, [create("calc/neg.py", "def neg(x):\n    return -x\n")],
                          say="Adding neg().", k=19),
                  doctor("s19-unknown-license", 1, "retry_with_hint", k=19,
                         hint="Every Python file under calc/ must start with '# SPDX-License-Identifier: MIT'.",
                         rationale="licence header gate"),
                  attempt("s19-unknown-license", 2, [create("calc/neg.py", HDR + "def neg(x):\n    return -x\n")],
                          say="Adding the header.", k=19)])

# ------------------------------------------------------------------ rate limits and network
scenario("s20-llm-429", "llm_rate_limit", "the API answers 429 (retry-after 0.2 s) twice on a Builder call",
         {"hardened": "the LLM client's shared backoff retries; pass in 1 attempt",
          "baseline": "same: rate limits of the API are handled by the LLM client in both arms"},
         phases=[build("s20-llm-429", "Add calc/core.neg(x), with a test")],
         scripts=[attempt("s20-llm-429", 1, [replace("calc/core.py", "def mul(a, b):",
                                                     "def neg(x):\n    return -x\n\n\ndef mul(a, b):"),
                                             create("tests/test_neg.py", "from calc.core import neg\n\n\n"
                                                    "def test_neg():\n    assert neg(2) == -2\n")],
                          say="Adding neg().", k=20,
                          errors=[{"status": 429, "retry_after": 0.2, "times": 2}])])

RATES_CHECK = """import json
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

STATE = Path(".state/rates-served")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if not STATE.exists():
            STATE.parent.mkdir(exist_ok=True)
            STATE.write_text("1")
            self.send_response(429)
            self.send_header("Retry-After", "1")
            self.end_headers()
            return
        body = json.dumps({"EUR": 1.0, "USD": 1.08}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


srv = HTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=srv.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{srv.server_port}/rates"
print(f"GET {url}")
try:
    rates = json.load(urllib.request.urlopen(url, timeout=5))
except urllib.error.HTTPError as e:
    print(f"Retry-After: {e.headers['Retry-After']}")
    raise
print("rates:", rates)
"""
scenario("s21-check-429", "rate_limited", "a check's API answers 429 Too Many Requests once",
         {"hardened": "classified rate_limited, wait retry-after, checks again, pass in attempt 1",
          "baseline": "Doctor says retry, a second Builder attempt changes nothing, pass in attempt 2"},
         files={"tools/fetch_rates.py": RATES_CHECK},
         phases=[build("s21-check-429", "Add calc/fx.py convert(amount, rate), with a test",
                       [CHECK, "python tools/fetch_rates.py"])],
         scripts=[attempt("s21-check-429", 1, [create("calc/fx.py", "def convert(amount, rate):\n"
                                                      "    return round(amount * rate, 2)\n"),
                                               create("tests/test_fx.py", "from calc.fx import convert\n\n\n"
                                                      "def test_convert():\n    assert convert(10, 1.08) == 10.8\n")],
                          say="Adding convert().", k=21),
                  doctor("s21-check-429", 1, "retry_with_hint", k=21,
                         hint="The rates endpoint answered 429 (rate limited); nothing in the code is wrong. "
                              "Retry without changes.", rationale="transient rate limit"),
                  attempt("s21-check-429", 2, [], say="No change needed; the failure was a rate limit.", k=21)])

PING_CHECK = """import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

STATE = Path(".state/ping-served")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if not STATE.exists():
            STATE.parent.mkdir(exist_ok=True)
            STATE.write_text("1")
            threading.Event().wait(2.0)  # the first request hangs past the client's timeout
            return
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *a):
        pass


srv = HTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=srv.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{srv.server_port}/health"
print(f"GET {url}")
print(urllib.request.urlopen(url, timeout=0.5).read().decode())
"""
scenario("s22-check-timeout", "network_timeout", "a check's request to a service times out once",
         {"hardened": "classified network_timeout, wait (backoff), checks again, pass in attempt 1",
          "baseline": "Doctor says retry, a second Builder attempt changes nothing, pass in attempt 2"},
         files={"tools/ping_service.py": PING_CHECK},
         phases=[build("s22-check-timeout", "Add calc/core.square(x), with a test",
                       [CHECK, "python tools/ping_service.py"])],
         scripts=[attempt("s22-check-timeout", 1, [replace("calc/core.py", "def mul(a, b):",
                                                           "def square(x):\n    return x * x\n\n\ndef mul(a, b):"),
                                                   create("tests/test_square.py", "from calc.core import square\n\n\n"
                                                          "def test_square():\n    assert square(3) == 9\n")],
                          say="Adding square().", k=22),
                  doctor("s22-check-timeout", 1, "retry_with_hint", k=22,
                         hint="The service did not answer in time; that is transient. Retry without changes.",
                         rationale="read timeout against the service"),
                  attempt("s22-check-timeout", 2, [], say="Nothing to change; retrying.", k=22)])

# ------------------------------------------------------------------ clean, two phases, hopeless
scenario("s23-clean", "clean", "no failure at all",
         {"hardened": "pass in 1 attempt", "baseline": "pass in 1 attempt"},
         phases=[build("s23-clean", "Add calc/core.cube(x), with a test")],
         scripts=[attempt("s23-clean", 1, [replace("calc/core.py", "def mul(a, b):",
                                                   "def cube(x):\n    return x ** 3\n\n\ndef mul(a, b):"),
                                           create("tests/test_cube.py", "from calc.core import cube\n\n\n"
                                                  "def test_cube():\n    assert cube(2) == 8\n")],
                          say="Adding cube().", k=23)])

scenario("s24-two-phases", "python_missing_dep", "two phases: a clean build, then a command phase "
         "whose check needs an undeclared module",
         {"hardened": "phase 2: classified python_missing_dep, installed, pass; no Doctor",
          "baseline": "phase 2: Doctor run_fix (pip install), pass"},
         wheels={"apbench_geo": "from math import hypot\n"},
         phases=[build("s24-two-phases-a", "Add calc/geo.py with dist(p, q) on apbench_geo, with a test "
                       "that skips without it",
                       [CHECK]),
                 {"id": "s24-two-phases-b", "goal": "Run the geo smoke test", "kind": "command",
                  "checks": ["python -c 'from calc.geo import dist; assert dist((0, 0), (3, 4)) == 5'"]}],
         scripts=[attempt("s24-two-phases-a", 1, [create("calc/geo.py", "from apbench_geo import hypot\n\n\n"
                                                         "def dist(p, q):\n    return hypot(q[0] - p[0], q[1] - p[1])\n"),
                                                  create("tests/test_geo.py", "import pytest\n\n"
                                                         "pytest.importorskip('apbench_geo')\n\n\n"
                                                         "def test_dist():\n    from calc.geo import dist\n"
                                                         "    assert dist((0, 0), (3, 4)) == 5\n")],
                          say="Adding dist().", k=24),
                  doctor("s24-two-phases-b", 1, "run_fix", k=24, command="python -m pip install apbench_geo",
                         rationale="ModuleNotFoundError: apbench_geo")])

scenario("s25-hopeless", "test_failure", "the Builder repeats the same wrong fix; stopped as stuck",
         {"hardened": "test_failure hint, same failure again: stuck after 2 attempts, or attempt limit "
                      "after 3 when the pytest duration differs (no Doctor)",
          "baseline": "Doctor hint twice, attempt limit after 3 (the unclassified signature holds the "
                      "pytest duration, so the repeat is rarely seen as stuck)"},
         phases=[build("s25-hopeless", "Add calc/primes.py with is_prime(n), with a test")],
         scripts=[attempt("s25-hopeless", 1, [create("calc/primes.py", "def is_prime(n):\n"
                                                     "    return n > 1 and all(n % d for d in range(2, n // 2))\n"),
                                              create("tests/test_primes.py", "from calc.primes import is_prime\n\n\n"
                                                     "def test_small():\n    assert [n for n in range(10) if is_prime(n)] == [2, 3, 5, 7]\n")],
                          say="Adding is_prime().", k=25),
                  doctor("s25-hopeless", 1, "retry_with_hint", k=25,
                         hint="is_prime(4) is True: range(2, n // 2) is empty for n = 4; use range(2, int(n ** 0.5) + 1).",
                         rationale="failing assertion"),
                  attempt("s25-hopeless", 2, [bash("true")], say="I believe the code is right.", k=25),
                  # reached only when the repeat is not recognised as "stuck" (see README)
                  doctor("s25-hopeless", 2, "retry_with_hint", k=25,
                         hint="is_prime(4) is still True: the loop bound is the problem, not the test.",
                         rationale="same assertion fails again"),
                  attempt("s25-hopeless", 3, [bash("true")], say="The code looks right to me.", k=25)])


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for old in HERE.glob("*.json"):
        old.unlink()
    for s in SCENARIOS:
        (HERE / f"{s['id']}.json").write_text(json.dumps(s, indent=1) + "\n")
    print(f"wrote {len(SCENARIOS)} scenarios to {HERE}")


if __name__ == "__main__":
    main()

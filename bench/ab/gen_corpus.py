"""Write the corpus-drawn A/B scenarios (``bench/ab/corpus/*.json``) from the captured failures.

Run ``.venv/bin/python bench/ab/gen_corpus.py`` after editing; the JSON files are
committed so that each scenario can be read on its own (same format as
``gen_scenarios.py``: id, category, description, expect, wheels, files, spec, scripts).

Every scenario replays one failure captured from a real tool
(``tests/fixtures/failures/<name>.log``, the command that produced it is in
``manifest.toml``): the phase's check ``sh check.sh`` prints that log and exits
with the tool's exit status until the Builder has fixed the phase, so the
classifier, the Doctor and the prompts see exactly what the real tool printed.
"Fixed" depends on the kind of failure:

- **code** (test failure, compile error, syntax error, import error, wrong
  working directory, no tests collected, missing command, patch conflict, and
  failures nothing recognises): ``fixed.txt`` holds ``fixed`` (the Builder
  writes it on its second attempt, after a hint from the classifier or the Doctor);
- **missing Python dependency**: the module imports in the run's venv (a local
  wheel is built for it; the daemon's safe action or the Builder installs it);
- **transient** (rate limit, network timeout): the failure happens once; the
  next run of the check passes.

The scripted Builder is the same for both arms: attempt 1 looks at the code,
runs the check (and sees the log), edits, and stops without fixing; attempt 2
(and 3) writes the fix and runs the check. The Doctor answers ``retry_with_hint``.
Output tokens are scripted (what the model chose to write); input tokens,
cache reads and writes are derived by the scripted server from each request.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
OUT = HERE / "corpus"
FAILURES = HERE.parent.parent / "tests" / "fixtures" / "failures"
PER_CATEGORY = 5
# prefix -> (category label, kind); the prefixes whose real fix is a change the Builder
# can make (or a wait, or an install): environment failures (auth, disk, memory,
# permissions, ports, network unreachable, unknown packages) are left out
PREFIXES: dict[str, tuple[str, str]] = {
    "tf": ("test_failure", "code"), "ce": ("compile_error", "code"),
    "pse": ("python_syntax_error", "code"), "pie": ("python_import_error", "code"),
    "wwd": ("wrong_working_dir", "code"), "ntc": ("no_tests_collected", "code"),
    "mc": ("missing_command", "code"), "paf": ("patch_apply_failed", "code"),
    "none": ("unclassified", "code"), "pmd": ("python_missing_dep", "dep"),
    "rl": ("rate_limited", "transient"), "nt": ("network_timeout", "transient"),
}
SKIP = {"wwd_pytest_repo_module", "none_python_quote_errors", "pmd_python_c_yaml"}  # read otherwise by the classifier; yaml is importable in a fresh venv here
DISTS = {"sklearn": "scikit-learn", "bs4": "beautifulsoup4", "yaml": "PyYAML", "black": "black",
         "cv2": "opencv-python", "PIL": "Pillow"}
OUT_TOKENS = {"a1": (350, 300, 80), "a2": (250, 300, 80), "doctor": 250}


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def bash(command: str) -> dict[str, Any]:
    return {"type": "tool_use", "name": "bash", "input": {"command": command}}


def edit(**inp: Any) -> dict[str, Any]:
    return {"type": "tool_use", "name": "str_replace_based_edit_tool", "input": inp}


def step(content: list[dict[str, Any]], out: int) -> dict[str, Any]:
    return {"content": content, "usage": {"output_tokens": out}}


def check_script(kind: str, exit_code: int, module: str | None) -> str:
    fail = f"cat .fixture/failure.log\nexit {exit_code}\n"
    if kind == "dep":
        return f"#!/bin/sh\npython -c 'import {module}' 2>/dev/null && exit 0\n{fail}"
    if kind == "transient":
        return ("#!/bin/sh\nif [ -e .state/seen ]; then echo ok; exit 0; fi\n"
                f"mkdir -p .state && touch .state/seen\n{fail}")
    return f"#!/bin/sh\ntest \"$(cat fixed.txt 2>/dev/null)\" = fixed && exit 0\n{fail}"


def scripts(pid: str, kind: str, dist: str | None) -> list[dict[str, Any]]:
    a1, a2 = OUT_TOKENS["a1"], OUT_TOKENS["a2"]
    look = "sh check.sh" if kind != "transient" else "ls"
    first = {"match": f"Carry out phase {pid} (attempt 1)", "steps": [
        step([text("Let me look at the code and run the check."),
              edit(command="view", path="src/app.py"), bash(look)], a1[0]),
        step([text("Tidying the function first."),
              edit(command="str_replace", path="src/app.py", old_str="return 1",
                   new_str="return 1  # checked")], a1[1]),
        step([text("Done: tidied src/app.py.")], a1[2])]}
    fix = (bash(f"python -m pip install -q {dist}") if kind == "dep"
           else edit(command="create", path="fixed.txt", file_text="fixed"))
    retry = [{"match": f"Carry out phase {pid} (attempt {n})", "steps": [
        step([text("The previous attempt failed; looking again."),
              edit(command="view", path="src/app.py")], a2[0]),
        step([text("Applying the fix and checking."), fix, bash("sh check.sh")], a2[1]),
        step([text("Done: the check passes.")], a2[2])]} for n in (2, 3)]
    hint = f"install {dist} into the environment" if kind == "dep" else "write the fix"
    doctor = {"match": f"Diagnose the failure of phase {pid}", "steps": [step([
        {"type": "tool_use", "name": "doctor_decision",
         "input": {"action": "retry_with_hint", "hint": f"The check fails; {hint}.",
                   "rationale": "The output shows what is missing; a retry with this hint fixes it."}}],
        OUT_TOKENS["doctor"])] * 3}
    return [first, *retry, doctor]


def main() -> None:
    manifest = tomllib.loads((FAILURES / "manifest.toml").read_text())["fixture"]
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("*.json"):
        old.unlink()
    n = 0
    for prefix, (category, kind) in PREFIXES.items():
        chosen = [name for name, e in sorted(manifest.items())
                  if name.split("_")[0] == prefix and name not in SKIP and 0 < e["exit_code"] < 256]
        for name in chosen[:PER_CATEGORY]:
            n += 1
            entry = manifest[name]
            sid = f"k{n:02d}-{name.replace('_', '-')}"
            pid = sid
            module = None
            if kind == "dep":
                module = next(m for m in DISTS if f"'{m}'" in (FAILURES / f"{name}.log").read_text()
                              or f"named {m}" in (FAILURES / f"{name}.log").read_text())
            dist = DISTS.get(module or "")
            files = {
                ".gitignore": ".state/\n__pycache__/\n",
                "README.md": "# app\n",
                "src/app.py": "def value():\n    return 1\n",
                "check.sh": check_script(kind, int(entry["exit_code"]), module),
                ".fixture/failure.log": (FAILURES / f"{name}.log").read_text(errors="replace"),
            }
            scenario = {
                "id": sid, "category": category, "fixture": name, "tool": entry.get("tool"),
                "captured_command": entry["command"], "kind": kind,
                "description": f"{entry.get('tool')} failure replayed: `{entry['command']}`",
                "expect": {"hardened": {"code": "classifier hint, attempt 2 fixes",
                                        "dep": "safe action installs the module, no retry",
                                        "transient": "wait, the check passes again"}[kind]
                           if category != "unclassified" else "Doctor, attempt 2 fixes",
                           "baseline": "Doctor, attempt 2 fixes"},
                "wheels": {module: f"VALUE = 42  # stands in for {dist}\n"} if module else {},
                "dists": {module: dist} if module else {},
                "files": files,
                "spec": {"goal": f"Fix the {category} failure of the check", "phases": [{
                    "id": pid, "goal": "Make `sh check.sh` pass", "kind": "build",
                    "scope": ["src/**", "fixed.txt"], "checks": ["sh check.sh"]}]},
                "scripts": scripts(pid, kind, dist),
            }
            (OUT / f"{sid}.json").write_text(json.dumps(scenario, indent=1) + "\n")
    print(f"wrote {n} scenarios to {OUT}")


if __name__ == "__main__":
    main()

"""``autopackctl classify`` / ``patterns`` as real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from autopack.actors.classifier import PATTERNS

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "failures"
# A tiny argparse harness around our register(): works without the lead's autopackctl.
HARNESS = (
    "import argparse, sys\n"
    "from autopack.daemon.ctl._classify import register\n"
    "p = argparse.ArgumentParser(prog='autopackctl'); sub = p.add_subparsers(required=True)\n"
    "register(sub); a = p.parse_args(); sys.exit(a.func(a))\n"
)


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-c", HARNESS, *args], input=stdin, capture_output=True, timeout=60)


def test_classify_json_from_file_and_stdin() -> None:
    p = run("classify", str(FIX / "ct_timeout_kill_python.log"), "--exit-code", "137",
            "--command", "timeout -s KILL 5 make", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["pattern"] == "command_timeout"
    assert {"evidence", "details", "mitigation"} <= out.keys()
    p = run("classify", "-", "--json", stdin=b"just a failure\n")
    assert p.returncode == 0
    assert json.loads(p.stdout)["pattern"] is None


def test_classify_human_and_unreadable_file(tmp_path: Path) -> None:
    p = run("classify", str(FIX / "pmd_python_c_yaml.log"))
    assert p.returncode == 0
    assert b"python_missing_dep" in p.stdout
    assert b"PyYAML" in p.stdout
    p = run("classify", str(tmp_path / "missing.log"))
    assert p.returncode == 2
    assert p.stderr.count(b"\n") == 1
    assert b"Traceback" not in p.stderr


def test_patterns_lists_every_id() -> None:
    p = run("patterns", "--json")
    assert p.returncode == 0
    assert [r["id"] for r in json.loads(p.stdout)["patterns"]] == list(PATTERNS)

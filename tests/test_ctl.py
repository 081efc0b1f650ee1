"""autopackctl for people, through the real autopackctl and autopackd processes: one-line
errors, did-you-mean, global options anywhere, short ids, retry, diff, wait --timeout,
the JSON convention."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import BIN, git, wait_state, write_spec

CTL = str(BIN / "autopackctl")


def ctl(*args: str, env: dict[str, str] | None = None,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CTL, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, input=input)


def one_line_error(res: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Assert exit 2, nothing on stdout, exactly one line on stderr, no traceback."""
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert res.stdout == ""
    assert res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("autopackctl")
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert needle in res.stderr, res.stderr
    return res.stderr


def submit(d: Any, spec: Path, repo: Path) -> str:
    res = d.ctl("submit", str(spec), "--repo", str(repo), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["run_ids"] == [doc["run_id"]]
    return str(doc["run_id"])


# ------------------------------------------------------------------ errors, no daemon needed
@pytest.mark.parametrize(("argv", "needles"), [
    pytest.param(["stauts"], ["unknown command 'stauts'", "did you mean 'status'?"], id="command"),
    pytest.param(["lsit", "--json"], ["did you mean 'list'?"], id="command-with-global"),
    pytest.param(["list", "--limt", "3"], ["unrecognized arguments: --limt",
                                           "did you mean '--limit'?"], id="option"),
    pytest.param(["list", "--state", "bogus"], ["invalid choice: 'bogus'"], id="state-choice"),
    pytest.param(["list", "--state", "runing"], ["did you mean 'running'?"], id="state-typo"),
    pytest.param(["list", "--limit", "-1"], ["--limit", "must be 0 (all) or more"], id="limit"),
    pytest.param(["--sockett", "x", "list"], ["unknown option --sockett",
                                              "did you mean '--socket'?"], id="global-option"),
    pytest.param(["status"], ["status: the following arguments are required: RUN"], id="missing"),
    pytest.param([], ["no command given"], id="nothing"),
    pytest.param(["list", "--socket"], ["--socket needs a value"], id="socket-value"),
    pytest.param(["wait", "abc", "--timeout", "soon"], ["invalid float value: 'soon'"], id="float"),
])
def test_usage_errors_are_one_line(argv: list[str], needles: list[str]) -> None:
    one_line_error(ctl(*argv), *needles)


def test_no_daemon_is_one_line(tmp_path: Path) -> None:
    for cmd in (["list"], ["status", "latest"], ["stats"], ["health"], ["diff", "x"]):
        one_line_error(ctl("--socket", str(tmp_path / "none.sock"), *cmd), "not running")


def test_spec_errors_name_file_field_and_suggest(tmp_path: Path) -> None:
    spec = tmp_path / "plan.toml"
    spec.write_text('goal = "g"\nrepos = "."\n[[phases]]\nid = "a"\ngoal = "x"\nchekcs = ["true"]\n'
                    '[limits]\nmax_attempt = 2\n')
    err = one_line_error(ctl("--socket", str(tmp_path / "none.sock"), "submit", str(spec)))
    assert f"{spec}: invalid run spec: " in err
    assert "repos: unknown field (did you mean 'repo'?)" in err
    assert "phases[0].chekcs: unknown field (did you mean 'checks'?)" in err
    assert "limits.max_attempt: unknown field (did you mean 'max_attempts'?)" in err
    broken = tmp_path / "broken.toml"
    broken.write_text('goal = "g"\n[[phases]\nid = "a"\n')
    one_line_error(ctl("submit", str(broken)), str(broken), "not valid TOML", "line 2")
    one_line_error(ctl("submit", str(tmp_path / "missing.toml")), "missing.toml",
                   "No such file")


def test_classify_binary_input_says_so(tmp_path: Path) -> None:
    blob = tmp_path / "core"
    blob.write_bytes(bytes(range(256)) * 64)
    one_line_error(ctl("classify", str(blob)), "binary")
    res = ctl("classify", "-", input="ModuleNotFoundError: No module named 'yaml'\n")
    assert res.returncode == 0, res.stderr


def test_help_lists_every_command_and_exit_codes() -> None:
    from autopack.daemon.ctl._main import COMMANDS

    for argv in (["--help"], ["-h"]):
        res = ctl(*argv)
        assert res.returncode == 0
        for name in COMMANDS:
            assert f"\n  {name} " in res.stdout
        assert "3 wait --timeout ran out" in res.stdout
    sub = ctl("retry", "--help")
    assert sub.returncode == 0
    assert "--from PHASE" in sub.stdout
    assert ctl("--help", "diff").stdout == ctl("diff", "--help").stdout


# ------------------------------------------------------------------ against a real daemon
def three_phases(tmp_path: Path, fail_b: bool) -> Path:
    b_check = "test -f fixed.txt" if fail_b else "true"
    return write_spec(tmp_path / ("fail.json" if fail_b else "ok.json"), [
        {"id": "a", "goal": "make a", "kind": "command", "checks": ["echo a > a.txt"]},
        {"id": "b", "goal": "make b", "kind": "command", "checks": ["echo b > b.txt", b_check]},
        {"id": "c", "goal": "make c", "kind": "command", "checks": ["echo c > c.txt"]},
    ])


def test_global_options_in_any_position(daemon: Any, repo: Path, tmp_path: Path) -> None:
    run_id = submit(daemon, three_phases(tmp_path, fail_b=False), repo)
    wait_state(daemon, run_id)
    env = {"AUTOPACK_SOCKET": ""}
    for argv in (["--socket", daemon.socket, "--json", "status", run_id],
                 ["status", run_id, "--socket", daemon.socket, "--json"],
                 ["status", "--json", f"--socket={daemon.socket}", run_id]):
        res = ctl(*argv, env=env)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["run_id"] == run_id


def test_short_ids_unique_ambiguous_and_latest(daemon: Any, repo: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "s.json", [
        {"id": "a", "goal": "a", "kind": "command", "checks": ["true"]}])
    ids = [submit(daemon, spec, repo) for _ in range(3)]
    for run_id in ids:
        wait_state(daemon, run_id)
    hexes = [i.rsplit("-", 1)[1] for i in ids]
    for run_id, hx in zip(ids, hexes, strict=True):
        # the shortest prefix of the random part that names only this run (by either rule)
        n = next(n for n in range(1, 9)
                 if sum(h.startswith(hx[:n]) or i.startswith(hx[:n])
                        for h, i in zip(hexes, ids, strict=True)) == 1)
        for ref in (hx[:n], hx, run_id):
            res = daemon.ctl("status", ref, "--json")
            assert res.returncode == 0, res.stderr
            assert json.loads(res.stdout)["run_id"] == run_id
    latest = json.loads(daemon.ctl("status", "latest", "--json").stdout)
    assert latest["run_id"] == ids[-1]
    # a prefix every run shares (today's date) is ambiguous: one line naming the candidates
    err = one_line_error(daemon.ctl("logs", ids[0][:8]), "is ambiguous", "[ambiguous_run]")
    for run_id in ids:
        assert run_id in err
    one_line_error(daemon.ctl("report", "zzzz"), "no run with id 'zzzz'", "[unknown_run]")
    # every command takes them: logs, report, diff, cancel (refused: already ended), wait
    assert daemon.ctl("logs", "latest", "--json").returncode == 0
    assert json.loads(daemon.ctl("report", "latest", "--json").stdout)["run_id"] == ids[-1]
    one_line_error(daemon.ctl("cancel", "latest"), "already ended")
    waited = json.loads(daemon.ctl("wait", "latest", "--json").stdout)
    assert [r["run_id"] for r in waited["runs"]] == [ids[-1]]


def test_retry_from_a_phase_keeps_earlier_commits(daemon: Any, repo: Path, tmp_path: Path) -> None:
    old = submit(daemon, three_phases(tmp_path, fail_b=True), repo)
    assert wait_state(daemon, old).state == "failed"
    one_line_error(daemon.ctl("retry", old, "--from", "zz"), "has no phase 'zz'")
    one_line_error(daemon.ctl("retry", old, "--from", "c"), "cannot keep phase 'b'")
    # the user fixes the cause outside the run, then retries from the failed phase
    (repo / "fixed.txt").write_text("ok\n")
    git(repo, "add", "fixed.txt")
    git(repo, "commit", "-q", "-m", "fix")
    res = daemon.ctl("retry", old.rsplit("-", 1)[1][:6], "--json")  # a short id; default: the first failed phase
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["retry_of"] == old
    new = doc["run_id"]
    st = wait_state(daemon, new)
    # b still fails: the retry continues the old branch, which does not have fixed.txt
    assert st.state == "failed"
    assert st.phases[0].state == "succeeded"
    assert st.phases[0].reason == f"kept from run {old}"
    old_a = json.loads(daemon.ctl("status", old, "--json").stdout)["phases"][0]["commit"]
    assert st.phases[0].commit == old_a
    log = git(repo, "log", "--format=%s", f"autopack/{new}").splitlines()
    assert log[0] == "a: make a"  # the kept commit is on the new branch, not redone
    assert git(repo, "rev-parse", f"autopack/{new}") == old_a
    # from the first phase: everything runs again, from the original base
    res = daemon.ctl("retry", new, "--from", "a", "--wait", "--json")
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    again = doc["run_id"]
    assert [p["state"] for p in doc["runs"][0]["phases"]] == ["succeeded", "failed", "cancelled"]
    assert doc["runs"][0]["phases"][0]["reason"] is None  # not kept: redone
    assert git(repo, "rev-parse", f"autopack/{again}~1") == git(repo, "rev-parse", "HEAD~1")
    events = [json.loads(x) for x in daemon.ctl("logs", new, "--json").stdout.splitlines()]
    sub = next(e for e in events if e["kind"] == "submitted")
    assert sub["payload"]["retry_of"] == old
    assert sub["payload"]["from_phase"] == "b"
    kept = [e for e in events if e["kind"] == "phase_succeeded" and e["payload"].get("kept_from")]
    assert [e["phase_id"] for e in kept] == ["a"]
    # a succeeded run is not retried without --from
    ok = submit(daemon, three_phases(tmp_path, fail_b=False), repo)
    wait_state(daemon, ok)
    one_line_error(daemon.ctl("retry", ok), "only a failed or cancelled run")


def test_diff_shows_the_runs_change(daemon: Any, repo: Path, tmp_path: Path) -> None:
    run_id = submit(daemon, three_phases(tmp_path, fail_b=False), repo)
    assert wait_state(daemon, run_id).state == "succeeded"
    res = daemon.ctl("diff", run_id)
    assert res.returncode == 0, res.stderr
    expected = subprocess.run(["git", "diff", "HEAD", f"autopack/{run_id}"], cwd=repo,
                              capture_output=True, text=True, check=True).stdout
    assert res.stdout == expected
    for name in ("a.txt", "b.txt", "c.txt"):
        assert f"+++ b/{name}" in res.stdout
    stat = daemon.ctl("diff", "latest", "--stat").stdout
    assert "3 files changed" in stat
    doc = json.loads(daemon.ctl("diff", run_id, "--json").stdout)
    assert set(doc) == {"run_id", "repo", "base", "head", "stat", "patch", "truncated"}
    assert doc["base"] == git(repo, "rev-parse", "HEAD")
    assert doc["head"] == git(repo, "rev-parse", f"autopack/{run_id}")
    # a retry's diff is measured from the original base: the kept phase is part of it
    failed = submit(daemon, three_phases(tmp_path, fail_b=True), repo)
    wait_state(daemon, failed)
    retry = json.loads(daemon.ctl("retry", failed, "--json").stdout)["run_id"]
    wait_state(daemon, retry)
    assert "+++ b/a.txt" in daemon.ctl("diff", retry).stdout


def test_wait_timeout_says_so_with_its_own_code(daemon: Any, repo: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "slow.json", [
        {"id": "slow", "goal": "s", "kind": "command", "checks": ["sleep 30"]}])
    run_id = submit(daemon, spec, repo)
    res = daemon.ctl("wait", run_id, "--timeout", "0.5")
    assert res.returncode == 3, (res.stdout, res.stderr)
    assert res.stderr.count("\n") == 1
    assert "wait timed out after 0.5 s" in res.stderr
    assert run_id in res.stderr
    doc = json.loads(daemon.ctl("wait", run_id, "--timeout", "0", "--json").stdout)
    assert doc["timed_out"] is True
    assert doc["runs"][0]["state"] in ("queued", "running")
    assert daemon.ctl("cancel", run_id).returncode == 0


def test_every_json_output_parses(daemon: Any, repo: Path, tmp_path: Path) -> None:
    """One JSON document per one-shot command; JSON Lines for logs (docs/cli.md)."""
    run_id = submit(daemon, three_phases(tmp_path, fail_b=False), repo)
    wait_state(daemon, run_id)
    log = tmp_path / "out.log"
    log.write_text("E   ModuleNotFoundError: No module named 'yaml'\n")
    plan = tmp_path / "plan.md"
    plan.write_text("# Goal\nAdd a file.\n\n## Phase 1: make it\n- run `true`\n")
    docs = {
        "list": ["list"], "status": ["status", run_id], "wait": ["wait", run_id],
        "report": ["report", run_id], "health": ["health"], "diff": ["diff", run_id],
        "stats": ["stats"], "lessons": ["lessons"], "context": ["context", run_id],
        "patterns": ["patterns"], "classify": ["classify", str(log)],
        "normalize": ["normalize", str(plan)], "detect": ["detect", str(repo)],
    }
    keys = {"list": {"runs"}, "status": {"run_id", "state", "phases", "tokens"},
            "wait": {"runs", "timed_out"}, "diff": {"patch"}, "health": {"ready"},
            "lessons": {"lessons"}, "patterns": {"patterns"}, "classify": {"pattern"},
            "context": {"text", "bytes"}}
    for name, argv in docs.items():
        res = daemon.ctl(*argv, "--json")
        assert res.returncode in (0, 1), (name, res.stderr)
        doc = json.loads(res.stdout)  # exactly one document
        assert isinstance(doc, dict), name
        assert keys.get(name, set()) <= set(doc), (name, sorted(doc))
    for follow in ([], ["-f"]):
        lines = daemon.ctl("logs", run_id, *follow, "--json").stdout.splitlines()
        events = [json.loads(x) for x in lines]
        assert events[0]["kind"] == "submitted"
        assert all("kind" in e for e in events)


def test_piped_wait_and_logs_print_plain_lines(daemon: Any, repo: Path, tmp_path: Path) -> None:
    run_id = submit(daemon, three_phases(tmp_path, fail_b=False), repo)
    for argv in (["wait", run_id], ["logs", "-f", run_id]):
        res = daemon.ctl(*argv)
        assert res.returncode == 0
        assert "\x1b" not in res.stdout
        assert "\r" not in res.stdout


# ------------------------------------------------------------------ shell completion
def complete_bash(words: list[str], tmp_path: Path) -> list[str]:
    """Run the generated bash completion function on ``words`` (the last one being typed)."""
    script = ctl("completion", "bash").stdout
    (tmp_path / "c.bash").write_text(script)
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    prog = (f"source {tmp_path / 'c.bash'}; COMP_WORDS=({quoted}); "
            f"COMP_CWORD={len(words) - 1}; _autopackctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    res = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, timeout=30,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    return sorted(x for x in res.stdout.splitlines() if x)


def test_bash_completion_loads_and_completes(tmp_path: Path) -> None:
    res = subprocess.run(["bash", "-c", f"source <({CTL} completion bash); complete -p autopackctl"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "complete -o default -F _autopackctl autopackctl"
    assert complete_bash(["autopackctl", "st"], tmp_path) == ["stats", "status"]
    assert complete_bash(["autopackctl", "--json", "re"], tmp_path) == ["report", "retry"]
    assert complete_bash(["autopackctl", "--socket", "/x", "list", "--st"], tmp_path) == ["--state"]
    assert complete_bash(["autopackctl", "list", "--state", "fa"], tmp_path) == ["failed"]
    assert complete_bash(["autopackctl", "retry", "x", "--f"], tmp_path) == ["--from"]
    assert complete_bash(["autopackctl", "status", "la"], tmp_path) == ["latest"]
    assert complete_bash(["autopackctl", "completion", ""], tmp_path) == ["bash", "fish", "zsh"]
    (tmp_path / "plan.toml").write_text("")
    assert complete_bash(["autopackctl", "submit", "pla"], tmp_path) == ["plan.toml"]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_completion_load(shell: str, tmp_path: Path) -> None:
    from .conftest import require_system

    exe = require_system(shell, shell)
    script = tmp_path / f"c.{shell}"
    script.write_text(ctl("completion", shell).stdout)
    if shell == "zsh":
        prog = f"source {script}; print -r -- ${{_comps[autopackctl]}}"
        want = "_bash_complete"
    else:
        prog = f"source {script}; complete -C 'autopackctl sta'"
        want = "status"
    res = subprocess.run([exe, "-c", prog], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "HOME": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert want in res.stdout, res.stdout


def test_build_phase_without_key_or_endpoint_is_refused_at_submit(daemon_factory: Any,
                                                                  repo: Path,
                                                                  tmp_path: Path) -> None:
    d = daemon_factory(env={"ANTHROPIC_API_KEY": "", "ANTHROPIC_BASE_URL": "",
                            "CREDENTIALS_DIRECTORY": ""})
    spec = write_spec(tmp_path / "b.json", [
        {"id": "prep", "goal": "p", "kind": "command", "checks": ["true"]},
        {"id": "code-it", "goal": "write code", "kind": "build", "checks": ["true"]}])
    one_line_error(d.ctl("submit", str(spec), "--repo", str(repo)),
                         "build phase 'code-it' needs a model", "ANTHROPIC_API_KEY",
                         "[invalid_spec]")
    runs = json.loads(d.ctl("list", "--json").stdout)["runs"]
    assert runs == []  # nothing was queued
    cmd_only = write_spec(tmp_path / "c.json", [
        {"id": "prep", "goal": "p", "kind": "command", "checks": ["true"]}])
    assert d.ctl("submit", str(cmd_only), "--repo", str(repo)).returncode == 0


# ------------------------------------------------------------------ a terminal; what is imported
def run_on_terminal(argv: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    """Run ``argv`` with its stdout on a pseudo-terminal; return (exit status, all output)."""
    import pty
    import select

    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    out = b""
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], timeout)
            if not ready:
                raise AssertionError(f"no output for {timeout} s: {out!r}")
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
    return proc.wait(timeout), out.decode("utf-8", "replace")


def test_wait_and_logs_on_a_terminal_show_a_live_line(daemon: Any, repo: Path,
                                                      tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "live.json", [
        {"id": "first", "goal": "f", "kind": "command", "checks": ["sleep 1.5"]},
        {"id": "second", "goal": "s", "kind": "command", "checks": ["sleep 1.5"]}])
    run_id = submit(daemon, spec, repo)
    env = {**daemon.env, "AUTOPACK_SOCKET": daemon.socket}
    code, out = run_on_terminal([CTL, "wait", run_id], env)
    assert code == 0, out
    assert "\r\x1b[K" in out  # redrawn in place
    assert f"{run_id}  running" in out
    assert "phase 1/2 first  attempt 1" in out or "phase 2/2 second  attempt 1" in out
    assert " tok" in out
    assert f"run {run_id}: succeeded" in out  # the summary replaces the live line at the end
    run2 = submit(daemon, spec, repo)
    code, out = run_on_terminal([CTL, "logs", "-f", run2], env)
    assert code == 0, out
    assert "phase_running" in out
    assert "\r\x1b[K" in out
    assert "phase 2/2 second" in out
    assert f"run {run2}: succeeded" in out


@pytest.mark.parametrize(("argv", "forbidden"), [
    pytest.param(["--help"], {"argparse", "msgspec", "autopack.protocol"}, id="help"),
    pytest.param(["status", "latest"], {"autopack.actors", "autopack.daemon._app", "trio",
                                        "anthropic", "sqlite3", "tomllib"}, id="status"),
    pytest.param(["list"], {"autopack.actors", "autopack.daemon._app", "trio", "anthropic",
                            "sqlite3", "shutil"}, id="list"),
])
def test_each_command_imports_only_what_it_uses(argv: list[str], forbidden: set[str],
                                                tmp_path: Path) -> None:
    """The client imports only autopack.protocol and its own sub-package; --help not even that."""
    import sys

    code = ("import sys\nfrom autopack.daemon.ctl._main import main\nmain(sys.argv[1:])\n"
            "mods = sorted(sys.modules)\n"
            "print(' '.join(m for m in mods if m.startswith('autopack')))\n"
            f"print(' '.join(m for m in mods if m.split('.')[0] in {sorted(forbidden)!r}\n"
            f"               or m in {sorted(forbidden)!r}))\n")
    res = subprocess.run([sys.executable, "-c", code, "--socket", str(tmp_path / "no.sock"),
                          *argv], capture_output=True, text=True, timeout=60)
    ours, bad = res.stdout.splitlines()[-2:]
    assert bad == "", bad
    for module in ours.split():
        assert module.startswith(("autopack.daemon.ctl", "autopack.protocol")) \
            or module in ("autopack", "autopack.daemon"), module

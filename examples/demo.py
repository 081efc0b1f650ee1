"""The autopack demo: one real run from submit to report, on a throw-away state dir.

1. copies the bundled example repository (examples/demo-repo) into a temp dir
   and makes it a git repository;
2. starts ``autopackd`` on a temporary state dir (and, without an
   ANTHROPIC_API_KEY, the scripted model server that stands in for Claude —
   said plainly on the screen);
3. submits examples/demo-plan.toml, follows its event log live to the end;
4. prints the report and the branch it produced, stops the daemon;
5. keeps the repository (removes only the daemon's state dir) and prints the
   commands to look at the branch and to remove it all.

Exit status: 0 when the run succeeded.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
GIT_ENV = {"GIT_AUTHOR_NAME": "demo", "GIT_AUTHOR_EMAIL": "demo@localhost",
           "GIT_COMMITTER_NAME": "demo", "GIT_COMMITTER_EMAIL": "demo@localhost"}


def say(text: str) -> None:
    print(f"\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"==> {text}", flush=True)


def make_repo(dest: Path) -> Path:
    shutil.copytree(HERE / "demo-repo", dest)
    env = {**os.environ, **GIT_ENV}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "calc: initial"]):
        subprocess.run(["git", *args], cwd=dest, env=env, check=True)
    return dest


def start_model_server(work: Path, env: dict[str, str]) -> subprocess.Popen[str] | None:
    """Without an API key, start the scripted Messages API server and point the daemon at it."""
    if os.environ.get("ANTHROPIC_API_KEY"):
        say("ANTHROPIC_API_KEY is set: the Builder uses Claude for real (this costs tokens)")
        return None
    scenario = HERE.parent / "actors" / "testing" / "scenarios" / "demo.json"
    if not scenario.exists():
        return None
    say("no ANTHROPIC_API_KEY: using the bundled scripted model server instead of Claude "
        "(offline demo; no tokens are spent)")
    proc = subprocess.Popen(
        [sys.executable, "-m", "autopack.testing", "--scenario", str(scenario),
         "--port", "0"], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    env["ANTHROPIC_BASE_URL"] = url
    env["ANTHROPIC_API_KEY"] = "demo-offline-key"
    return proc


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="autopack-demo-"))
    state = work / "state"
    sock = str(state / "autopackd.sock")
    env = {**os.environ, "AUTOPACK_SOCKET": sock}
    daemon: subprocess.Popen[bytes] | None = None
    model: subprocess.Popen[str] | None = None
    try:
        repo = make_repo(work / "calc")
        say(f"example repository: {repo}")
        model = start_model_server(work, env)
        if shutil.which("bwrap") is None:
            say("bubblewrap (bwrap) is not installed: this demo runs UNCONFINED (sandbox = off);"
                " `sudo make system-deps` installs the run sandbox")
            env["AUTOPACK_SANDBOX"] = "off"
        say(f"starting autopackd (state dir {state})")
        daemon = subprocess.Popen(
            [str(BIN / "autopackd"), "--state-dir", str(state), "--socket", sock,
             "--health-listen", "127.0.0.1:0", "--log-level", "WARNING"], env=env)
        ctl = [str(BIN / "autopackctl")]
        deadline = time.monotonic() + 30
        while subprocess.run([*ctl, "health"], env=env, capture_output=True).returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                say("autopackd did not start")
                return 2
            time.sleep(0.1)
        subprocess.run([*ctl, "health"], env=env)
        say("submitting examples/demo-plan.toml")
        sub = subprocess.run([*ctl, "submit", str(HERE / "demo-plan.toml"), "--repo", str(repo)],
                             env=env, capture_output=True, text=True)
        if sub.returncode != 0:
            print(sub.stderr, file=sys.stderr)
            return 2
        run_id = sub.stdout.strip()
        say(f"run {run_id}: following its event log")
        subprocess.run([*ctl, "logs", "-f", run_id], env=env)
        say("report")
        rc = subprocess.run([*ctl, "report", run_id], env=env).returncode
        say(f"branch autopack/{run_id} in {repo}:")
        subprocess.run(["git", "log", "--oneline", f"autopack/{run_id}"], cwd=repo)
        outcome = "SUCCEEDED" if rc == 0 else "DID NOT SUCCEED"
        say(f"outcome: the run {outcome}")
        branch = f"autopack/{run_id}"
        say("the repository is kept; look at what the run did with:")
        print(f"    git -C {shlex.quote(str(repo))} log -p main..{branch}", flush=True)
        print(f"    (remove it all: rm -rf {shlex.quote(str(work))})", flush=True)
        return 0 if rc == 0 else 1
    finally:
        if daemon is not None and daemon.poll() is None:
            say("stopping autopackd")
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
        if model is not None:
            model.terminate()
            model.wait(10)
        # the branch lives in the repository: only the daemon's state (database, worktrees,
        # reports) goes; the repository forgets the worktrees that were under it
        shutil.rmtree(state, ignore_errors=True)
        if (work / "calc" / ".git").exists():
            subprocess.run(["git", "worktree", "prune"], cwd=work / "calc", check=False)
            say(f"kept the example repository: {work / 'calc'}")


if __name__ == "__main__":
    sys.exit(main())

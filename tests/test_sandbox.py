"""The sandbox around run commands: the pure argv builder, then real bwrap through
``run_command`` (no daemon), each escape attempt checked on the host."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import anyio
import pytest
from autopack.actors._proc import run_command
from autopack.actors._sandbox import (
    Mounts,
    Probe,
    Sandbox,
    SandboxLimits,
    SandboxUnavailable,
    bwrap_argv,
    probe,
    reap_leftovers,
    scrub_environ,
    ulimit_line,
    wrapper_script,
)
from autopack.protocol import SpecError, validate_spec

from .conftest import git, make_repo, require_system

pytestmark = pytest.mark.filterwarnings("error")


# ------------------------------------------------------------------ pure parts
def test_argv_hides_state_then_binds_the_run_back(tmp_path):
    m = Mounts(worktree=Path("/s/worktrees/r1"), scratch=Path("/s/tmp/r1"), state_dir=Path("/s"),
               writable=(Path("/s/envs/r1"),), readonly=(Path("/repo/.git"),),
               hidden=(tmp_path,))
    argv = bwrap_argv("bwrap", ["--unshare-user"], m, cwd=Path("/s/worktrees/r1"),
                      network=False, own_proc=True, script="S", command="C")
    joined = " ".join(argv)
    assert "--unshare-net" in argv
    assert f"--tmpfs {tmp_path}" in joined  # a hidden directory becomes an empty tmpfs
    # order matters: state dir hidden first, the run's own dirs bound back on top
    assert joined.index("--tmpfs /s ") < joined.index("--ro-bind-try /repo/.git")
    assert joined.index("--tmpfs /s ") < joined.index("--bind-try /s/envs/r1")
    assert joined.index("--bind /s/worktrees/r1") < joined.index(
        "--ro-bind-try /s/worktrees/r1/.git /s/worktrees/r1/.git")
    assert "--bind /s/tmp/r1 /tmp" in joined
    assert argv[-6:] == ["--", "bash", "-c", "S", "sandbox", "C"]
    assert "--as-pid-1" in argv
    assert "--die-with-parent" not in argv
    net = bwrap_argv("bwrap", [], m, cwd=Path("/"), network=True, own_proc=False, script="S",
                     command="C")
    assert "--unshare-net" not in net
    assert "--proc" not in net


@pytest.mark.parametrize(("limits", "expected"), [
    pytest.param(SandboxLimits(), "ulimit -S -H -v 8388608 -u 2048 -f 4194304 -t 3600",
                 id="defaults"),
    pytest.param(SandboxLimits(memory_mb=0, processes=0, file_size_mb=1, cpu_s=0),
                 "ulimit -S -H -f 1024", id="only-file-size"),
    pytest.param(SandboxLimits(memory_mb=0, processes=0, file_size_mb=0, cpu_s=0), "",
                 id="none"),
])
def test_ulimit_line(limits, expected):
    assert ulimit_line(limits) == expected


def test_wrapper_watches_the_daemon_pipe_only_when_sandboxed():
    assert "read -r -u 7" in wrapper_script(7, SandboxLimits())
    assert "kill -KILL -1" not in wrapper_script(None, SandboxLimits())


@pytest.mark.parametrize(("network", "step", "allowed"), [
    ("none", "install", False), ("install", "install", True), ("install", "command", False),
    ("all", "command", True),
])
def test_network_policy(tmp_path, network, step, allowed):
    sb = Sandbox(probe=Probe(mode="bwrap", detail="x"), state_dir=tmp_path)
    box = sb.box(worktree=tmp_path, scratch=tmp_path, network=network)
    assert box.allows_network(step) is allowed


def test_spec_network_and_workdir_are_validated():
    base = {"goal": "g", "phases": [{"id": "p", "goal": "g"}]}
    assert validate_spec({**base, "network": "all", "workdir": "pkg/sub"}).network == "all"
    with pytest.raises(SpecError) as err:
        validate_spec({**base, "network": "some", "workdir": "../up"})
    fields = {p for p, _ in err.value.problems}
    assert fields == {"network", "workdir"}


def test_unavailable_sandbox_refuses_instead_of_running_bare(tmp_path):
    sb = Sandbox(probe=Probe(mode="unavailable", detail="bwrap not found"), state_dir=tmp_path)
    box = sb.box(worktree=tmp_path, scratch=tmp_path)
    with pytest.raises(SandboxUnavailable, match="bwrap not found"):
        box.launch("true", cwd=tmp_path, env={})


def test_scrub_environ_clears_the_kernel_copy():
    code = ("import os; from autopack.actors._sandbox import scrub_environ;"
            "print(scrub_environ(['SECRET_X']));"
            "print(b'hunter2' in open('/proc/self/environ','rb').read(), 'SECRET_X' in os.environ,"
            " b'KEEP=me' in open('/proc/self/environ','rb').read())")
    out = subprocess.run([os.sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "SECRET_X": "hunter2", "KEEP": "me"}, check=True)
    assert out.stdout.split() == ["['SECRET_X']", "False", "False", "True"]
    assert scrub_environ(["NOT_SET_ANYWHERE_123"]) == []


# ------------------------------------------------------------------ real bwrap
@pytest.fixture
def box(tmp_path, monkeypatch):
    require_system("bwrap", "bubblewrap")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY")
    (home / ".netrc").write_text("machine x password y")
    monkeypatch.setenv("HOME", str(home))
    state = tmp_path / "state"
    repo = make_repo(tmp_path / "repo")
    wt = state / "worktrees" / "r1"
    wt.parent.mkdir(parents=True)
    git(repo, "worktree", "add", "-q", "-b", "autopack/r1", str(wt))
    (state / "autopack.db").write_text("the database")
    other = state / "worktrees" / "r2"
    other.mkdir()
    (other / "secret.py").write_text("other run")
    scratch = state / "tmp" / "r1"
    scratch.mkdir(parents=True)
    env_dir = state / "envs" / "r1"
    env_dir.mkdir(parents=True)
    found = probe("auto")
    assert found.mode == "bwrap", found
    sb = Sandbox(probe=found, state_dir=state, hide=(tmp_path / "key",),
                 limits=SandboxLimits(file_size_mb=1, cpu_s=1))
    (tmp_path / "key").write_text("sk-ant-file-key")
    b = sb.box(worktree=wt, scratch=scratch, writable=[env_dir],
               readonly=[repo / ".git"], network="install")
    return b, {"repo": repo, "wt": wt, "state": state, "home": home, "env": env_dir,
               "scratch": scratch, "tmp": tmp_path}


def run(box_, command: str, step: str = "command", timeout: float = 30) -> tuple[int, str]:
    b, paths = box_

    async def go() -> tuple[int, str]:
        r = await run_command(command, cwd=paths["wt"], env={"PATH": os.environ["PATH"]},
                              box=b, step=step, timeout_s=timeout)  # type: ignore[arg-type]
        return r.exit_code, r.output

    return anyio.run(go, backend="trio")


def test_writes_land_only_in_worktree_env_and_private_tmp(box):
    _, p = box
    name = f"autopack-sbx-{uuid.uuid4().hex}"
    code, out = run(box, f"echo a > inside.txt && echo b > {p['env']}/installed && "
                         f"echo c > /tmp/{name} && cat /tmp/{name}")
    assert code == 0, out
    assert (p["wt"] / "inside.txt").read_text() == "a\n"
    assert (p["env"] / "installed").exists()
    assert not Path("/tmp", name).exists()  # the host's /tmp is untouched
    assert (p["scratch"] / name).read_text() == "c\n"  # it is the run's private /tmp
    for target in (p["tmp"] / "outside.txt", p["repo"] / "escape.txt", Path("/etc/autopack-x"),
                   p["home"] / "x"):
        code, out = run(box, f"echo x >> {target}")
        assert not target.exists()  # on the host: untouched
        if not target.is_relative_to("/tmp"):  # under /tmp it lands in the private /tmp
            assert code != 0, (target, out)


def test_state_dir_secrets_and_other_runs_are_hidden(box):
    _, p = box
    for target in (p["state"] / "autopack.db", p["state"] / "worktrees" / "r2" / "secret.py",
                   p["home"] / ".ssh" / "id_ed25519", p["tmp"] / "key"):
        code, out = run(box, f"cat {target}")
        assert code != 0 or out.strip() == "", (target, out)
        assert "PRIVATE KEY" not in out
        assert "the database" not in out
        assert "sk-ant" not in out
    code, out = run(box, f"cat {p['home']}/.netrc; ls {p['state']}/worktrees")
    assert "password" not in out, out
    assert "r2" not in out, out


def test_no_daemon_process_is_visible(box):
    code, out = run(box, f"ls /proc | grep -qx {os.getpid()} && echo SEEN; "
                         f"cat /proc/{os.getpid()}/environ; ps -e -o pid= | wc -l")
    assert "SEEN" not in out
    assert int(out.split()[-1]) <= 6, out  # only the sandbox's own few processes


def test_nothing_outlives_the_command(box):
    tag = 1000 + int(uuid.uuid4().int % 8000)
    code, out = run(box, f"setsid -f sleep {tag}; nohup sleep {tag + 1} >/dev/null 2>&1 & "
                         f"(sleep {tag + 2} &) ; echo started")
    assert code == 0
    assert "started" in out
    time.sleep(0.3)
    left = subprocess.run(["pgrep", "-f", f"sleep ({tag}|{tag + 1}|{tag + 2})$"],
                          capture_output=True, text=True)
    assert left.stdout == "", left.stdout


def test_commands_longer_than_ten_seconds_survive(box):
    # --die-with-parent would kill this at ~10 s: trio's spawning thread idles out
    code, out = run(box, "sleep 11.5; echo done", timeout=40)
    assert code == 0
    assert "done" in out


def test_git_dir_pointer_and_hooks_are_read_only(box):
    _, p = box
    hook = p["repo"] / ".git" / "hooks" / "post-commit"
    code, out = run(box, f"git status --short >/dev/null && echo STATUS_OK; "
                         f"echo 'touch /tmp/hooked' > {hook}; echo hook=$?; "
                         f"git config core.hooksPath /tmp; echo config=$?; "
                         f"echo 'gitdir: /tmp/evil' > .git; echo dotgit=$?")
    assert "STATUS_OK" in out, out
    assert "hook=1" in out, out
    assert "config=0" not in out, out
    assert "dotgit=1" in out, out
    assert not hook.exists()
    assert "hooksPath" not in (p["repo"] / ".git" / "config").read_text()
    assert (p["wt"] / ".git").read_text().startswith("gitdir: ")
    assert "/tmp/evil" not in (p["wt"] / ".git").read_text()


def test_network_only_for_install_steps(box, tmp_path):
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    port = srv.getsockname()[1]
    probe_cmd = (f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), "
                 f"timeout=3); print('CONNECTED')\"")
    try:
        code, out = run(box, probe_cmd)
        assert code != 0
        assert "CONNECTED" not in out
        code, out = run(box, probe_cmd, step="install")
        assert code == 0, out  # the install step: the network
        assert "CONNECTED" in out, out
    finally:
        srv.close()


def test_limits_apply_inside(box):
    code, out = run(box, "head -c 2M /dev/zero > big; echo rc=$?; ls -l big | awk '{print $5}'")
    assert "rc=1" in out or "rc=153" in out, out  # SIGXFSZ or EFBIG at 1 MiB
    assert int(out.split()[-1]) <= 1024 * 1024
    code, out = run(box, "ulimit -t; ulimit -H -f")
    assert out.split() == ["1", "1024"]


def test_reap_leftovers_kills_a_sandbox_of_an_earlier_daemon(box, tmp_path):
    b, p = box
    launch = b.launch("sleep 3000", cwd=p["wt"], env={"PATH": os.environ["PATH"]})
    # its watcher's pipe stays open here: only reap_leftovers can end it (as when a command
    # killed its own watcher before the daemon died)
    proc = subprocess.Popen(launch.argv, env=launch.env, start_new_session=True,
                            stdin=subprocess.DEVNULL, pass_fds=launch.pass_fds)
    try:
        deadline = time.monotonic() + 30
        while "sleep 3000" not in subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                                  text=True).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert reap_leftovers(tmp_path / "other-state") == []  # another daemon's: untouched
        assert proc.poll() is None
        killed = reap_leftovers(p["state"])
        assert proc.pid in killed
        assert proc.wait(10) in (-9, 137)  # bwrap killed, or bwrap saw its child killed
        time.sleep(0.2)
        assert "sleep 3000" not in subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                                  text=True).stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_shared_caches_are_writable_for_install_steps_only(box, tmp_path):
    b, p = box
    cache = p["state"] / "cache"
    cache.mkdir()
    boxed = b.sandbox.box(worktree=p["wt"], scratch=p["scratch"], install_writable=[cache])
    for step, expect in (("command", False), ("install", True)):
        async def go(step: str = step) -> int:
            r = await run_command(f"echo x > {cache}/{step}", cwd=p["wt"],
                                  env={"PATH": os.environ["PATH"]}, box=boxed, step=step)
            return r.exit_code

        code = anyio.run(go, backend="trio")
        assert (code == 0) is expect
        assert (cache / step).exists() is expect

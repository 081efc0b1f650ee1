"""Storage integrity, full disk and online backup (issue 13), through real processes.

Was: a 0-byte database started empty without a word (every run gone); corruption in
the middle of the file started "ready" and crashed on the first ``list``; a full disk
crashed the scheduler, leaked a lock fd (the next run stayed queued, "being executed by
another process") while ``/readyz`` said 200.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from autopack.protocol import ErrorCode, GetHealth, RemoteError, Submit, parse_spec_text

from .conftest import BIN, wait_state, write_spec


def _submit(d, tmp_path: Path, repo: Path, checks: list[str]) -> str:
    spec = write_spec(tmp_path / f"s{time.monotonic_ns()}.json",
                      [{"id": "a", "goal": "x", "kind": "command", "checks": checks}])
    res = d.ctl("submit", str(spec), "--repo", str(repo), "--json")
    assert res.returncode == 0, res.stderr
    return str(json.loads(res.stdout)["run_id"])


def _used_state_dir(daemon_factory, repo, tmp_path, runs: int = 3):
    d = daemon_factory()
    ids = [_submit(d, tmp_path, repo, ["echo ok"]) for _ in range(runs)]
    for run_id in ids:
        wait_state(d, run_id)
    assert d.stop() == 0
    return d


def _start_refused(d, needle: str) -> str:
    res = subprocess.run([str(BIN / "autopackd"), "--config", str(d.config_path)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert needle in lines[0], res.stderr
    assert "--reset-store" in lines[0]
    assert "Traceback" not in res.stderr
    assert not Path(d.socket).exists()
    return lines[0]


def test_empty_database_in_a_used_state_dir_is_refused(daemon_factory, repo, tmp_path):
    d = _used_state_dir(daemon_factory, repo, tmp_path)
    db = d.state_dir / "autopack.db"
    db.write_bytes(b"")  # 0 bytes, as after a bad copy or a truncating editor
    _start_refused(d, "is empty (0 bytes) but this state dir was used before")
    assert db.stat().st_size == 0  # untouched
    # the documented way out: move it aside, start empty
    res = subprocess.run([str(BIN / "autopackd"), "--config", str(d.config_path), "--reset-store"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "moved the database aside" in res.stdout
    assert list(d.state_dir.glob("autopack.db.damaged-*"))
    d.start()
    with d.client() as c:
        assert c.request(GetHealth()).runs.get("succeeded", 0) == 0


def test_corruption_in_the_middle_is_refused(daemon_factory, repo, tmp_path):
    d = _used_state_dir(daemon_factory, repo, tmp_path, runs=4)
    db = d.state_dir / "autopack.db"
    size = db.stat().st_size
    assert size >= 8 * 4096, size
    with open(db, "r+b") as fh:  # garble pages in the middle (not the header)
        fh.seek(size // 2 // 4096 * 4096)
        fh.write(os.urandom(3 * 4096))
    _start_refused(d, "autopack.db")


def test_truncated_database_is_refused(daemon_factory, repo, tmp_path):
    d = _used_state_dir(daemon_factory, repo, tmp_path, runs=4)
    db = d.state_dir / "autopack.db"
    with open(db, "r+b") as fh:
        fh.truncate(db.stat().st_size // 2)
    _start_refused(d, "autopack.db")


def test_empty_database_in_a_fresh_state_dir_is_fine(daemon_factory):
    d = daemon_factory(start=False)
    d.state_dir.mkdir(parents=True)
    (d.state_dir / "autopack.db").write_bytes(b"")
    d.start()
    with d.client() as c:
        assert c.request(GetHealth()).ready


def test_online_backup(daemon_factory, repo, tmp_path):
    d = daemon_factory()
    run_id = _submit(d, tmp_path, repo, ["echo ok"])
    wait_state(d, run_id)
    target = tmp_path / "backups" / "autopack.db"
    target.parent.mkdir()
    res = d.ctl("backup", str(target), "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["path"] == str(target)
    assert info["bytes"] == target.stat().st_size > 0
    copy = sqlite3.connect(target)
    assert copy.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    assert copy.execute("SELECT state FROM runs WHERE id=?", (run_id,)).fetchone()[0] == "succeeded"
    copy.close()
    # never overwrites; a bad path is one line
    again = d.ctl("backup", str(target))
    assert again.returncode == 2
    assert "exists" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    missing = d.ctl("backup", str(tmp_path / "no-such-dir" / "x.db"))
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr
    # a relative path is the caller's, not the daemon's working directory
    rel = subprocess.run([str(BIN / "autopackctl"), "backup", "rel.db"], cwd=tmp_path,
                         env={**d.env, "AUTOPACK_SOCKET": d.socket}, capture_output=True,
                         text=True, timeout=60)
    assert rel.returncode == 0, rel.stderr
    assert (tmp_path / "rel.db").stat().st_size > 0


# ---------------------------------------------------------------------- full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs mounted at tmp_path/disk (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the full-disk test mounts a small tmpfs: it needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(path: Path) -> None:
    with open(path, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (256 * 1024))
                fh.flush()
        except OSError:
            pass


def _storage_error(d, repo: Path) -> RemoteError:
    """Submit runs with large goals until the store refuses for lack of space."""
    big = "g" * 60_000
    spec = parse_spec_text(f'goal="{big}"\n[[phases]]\nid="a"\ngoal="{big}"\nkind="command"\n'
                           'checks=["true"]\n', fmt="toml")
    with d.client() as c:
        for _ in range(600):
            try:
                c.request(Submit(spec=spec, repo=str(repo)))
            except RemoteError as err:
                return err
    raise AssertionError("the store never ran out of space")


def test_full_disk_fails_requests_cleanly_and_recovers_without_restart(daemon_factory, repo,
                                                                       small_disk, tmp_path):
    d = daemon_factory("disk", start=False, config={"socket": str(tmp_path / "ctl.sock"),
                                                    "max_concurrent_runs": 1})
    d.start()
    pid = d.proc.pid
    filler = small_disk / "filler"
    _fill(filler)
    err = _storage_error(d, repo)
    assert err.code == ErrorCode.STORAGE, err
    assert "full" in err.message
    status, body = d.http("/readyz")
    assert status == 503
    assert body["parts"]["store"] == "down"
    assert "full" in body["details"]["store"]["last_error"]
    assert "autopack_store_write_failures_total" in d.http("/metrics")[1]
    filler.unlink()
    deadline = time.monotonic() + 30
    while d.http("/readyz")[0] != 200:
        assert time.monotonic() < deadline, "not ready again after space was freed"
        time.sleep(0.2)
    run_id = _submit(d, tmp_path, repo, ["echo back"])
    assert wait_state(d, run_id).state == "succeeded"
    assert d.proc.pid == pid
    assert d.proc.poll() is None


def test_full_disk_during_a_run_fails_it_and_the_next_run_executes(daemon_factory, repo,
                                                                  small_disk, tmp_path):
    d = daemon_factory("disk", start=False, config={"socket": str(tmp_path / "ctl.sock"),
                                                    "max_concurrent_runs": 1,
                                                    "sandbox": "off"})  # the check touches a host path
    d.start()
    marker = tmp_path / "started"
    run_id = _submit(d, tmp_path, repo, [f"touch {marker}; sleep 6; echo finished"])
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    filler = small_disk / "filler"
    _fill(filler)
    assert _storage_error(d, repo).code == ErrorCode.STORAGE
    time.sleep(7)  # the check ends while the disk is full: its events cannot be written
    filler.unlink()
    st = wait_state(d, run_id, timeout=60)
    assert st.state == "failed", st
    assert "storage" in st.reason or "cannot be written" in st.reason, st.reason
    assert not (small_disk / "worktrees" / run_id).exists()  # its worktree was freed
    # the run lock was released: the next run executes (was: queued forever)
    nxt = _submit(d, tmp_path, repo, ["echo next"])
    assert wait_state(d, nxt, timeout=60).state == "succeeded"
    assert d.proc.poll() is None
